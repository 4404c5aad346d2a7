//! The only place in the lab that needs `unsafe`: the `TUNSETIFF` ioctl and
//! `sched_setscheduler`.
//!
//! Everything else (entering a namespace, polling, timer slack) goes through `nix`'s safe
//! wrappers.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// `struct ifreq` as `TUNSETIFF` reads it: a 16-byte name, then the flags (the rest of the
/// 40-byte union is padding).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` and attaches it to a new layer-3 TUN interface called `name`
/// (`IFF_TUN | IFF_NO_PI`: every read and write is exactly one IP packet, no 4-byte
/// packet-information prefix). The interface lives in the network namespace of the
/// **calling thread**. The returned file is non-blocking.
pub(crate) fn open_tun(name: &str) -> std::io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || !name.is_ascii() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?} (1..15 ASCII characters)"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `file` is an open descriptor of /dev/net/tun for the whole call; TUNSETIFF
    // reads (and may write back the name into) a `struct ifreq`, and `req` is a properly
    // aligned, fully initialised `#[repr(C)]` value of the same size (40 bytes) that lives
    // until the call returns. No pointer is kept by the kernel after the ioctl.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut IfReqFlags,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Moves the calling thread to the `SCHED_FIFO` real-time class at `priority` (1..=99), so
/// packet deliveries are not delayed by ordinary processes competing for the CPU (the
/// kernel still caps real-time threads at 95% of each second by default).
pub(crate) fn set_realtime_priority(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `sched_setscheduler` reads one `sched_param` through the pointer during the
    // call; `param` is a valid, initialised value on the stack. pid 0 = the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<super::IfReqFlags>(), 40);
    }

    #[test]
    fn rejects_bad_names() {
        assert!(super::open_tun("").is_err());
        assert!(super::open_tun("a-name-that-is-far-too-long").is_err());
    }
}
