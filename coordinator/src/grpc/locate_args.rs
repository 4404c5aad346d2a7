//! The source and budget of a locate request, checked at the edge: an unknown source or a
//! budget with a mode it does not apply to is INVALID_ARGUMENT; a source needing RIPE Atlas
//! on a coordinator without `atlas-base-url` is FAILED_PRECONDITION naming the key.
use geoloc_proto::v1 as pb;
use tonic::Status;

use super::invalid;
use crate::config::Mode;
use crate::core::locate::LocateParams;
use crate::core::sources::SourceChoice;
use crate::Coordinator;

/// Largest budget a request may give, vantage points (Atlas' own cap per measurement).
pub const MAX_BUDGET: u32 = 1_000;

/// The wire source; INVALID_ARGUMENT for a value this coordinator does not know.
pub fn source_from_pb(v: i32) -> Result<SourceChoice, Status> {
    match pb::LocateSource::try_from(v) {
        Ok(pb::LocateSource::Unspecified | pb::LocateSource::Fleet) => Ok(SourceChoice::Fleet),
        Ok(pb::LocateSource::Atlas) => Ok(SourceChoice::Atlas),
        Ok(pb::LocateSource::Both) => Ok(SourceChoice::Both),
        Err(_) => Err(invalid(
            "invalid-argument",
            format!("source {v} is not one of fleet (1), atlas (2), both (3)"),
        )),
    }
}

/// Sets `p.source`, `p.budget` and, for a budget without a mode, the phased mode.
pub fn apply(
    coord: &Coordinator,
    p: &mut LocateParams,
    source: i32,
    budget: u32,
) -> Result<(), Status> {
    let source = source_from_pb(source)?;
    if source.needs_atlas() && coord.atlas.is_none() {
        return Err(Status::failed_precondition(
            crate::core::atlas_source::NOT_CONFIGURED,
        ));
    }
    if budget > MAX_BUDGET {
        return Err(invalid(
            "invalid-argument",
            format!("budget {budget} above {MAX_BUDGET} vantage points"),
        ));
    }
    if budget > 0 {
        match p.mode {
            None => p.mode = Some(Mode::Phased),
            Some(Mode::Phased) => {}
            Some(m) => {
                return Err(invalid(
                    "invalid-argument",
                    format!(
                        "a budget applies to the phased selection, not to mode {}: leave the \
                         mode unset or ask for phased",
                        m.as_str()
                    ),
                ))
            }
        }
    }
    p.source = source;
    p.budget = budget;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_on_the_wire() {
        assert_eq!(source_from_pb(0).unwrap(), SourceChoice::Fleet);
        assert_eq!(source_from_pb(2).unwrap(), SourceChoice::Atlas);
        assert_eq!(source_from_pb(3).unwrap(), SourceChoice::Both);
        let e = source_from_pb(9).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("source 9"), "{}", e.message());
        // The core and the wire agree on what an Atlas vantage point's id looks like.
        assert_eq!(
            geoloc_proto::convert::ATLAS_PREFIX,
            crate::core::atlas_source::ATLAS_PREFIX
        );
    }
}
