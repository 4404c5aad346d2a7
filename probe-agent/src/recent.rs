//! The answers of recent requests, by request id.
//!
//! A coordinator replica that dies while this probe measures loses the answer; the replica
//! that takes its run over asks again with the same request id (a keyed run's ids are its
//! own: `{result_id}.{probe}.{n}`). The agent then sends the answer it already has,
//! or waits for the measurement still running, instead of measuring the target again: one
//! run never has this probe measure a target twice. Bounded: the newest [`MAX_ENTRIES`]
//! requests of the last [`KEEP`].
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use geoloc_proto::v1 as pb;

/// Requests remembered at most.
pub const MAX_ENTRIES: usize = 4096;
/// How long an answer is kept.
pub const KEEP: Duration = Duration::from_secs(600);
/// Longest request id remembered, bytes (a coordinator's ids are far shorter).
pub const MAX_ID_LEN: usize = 256;

/// The answer of one request: None while it is measured.
pub type Answer = watch::Receiver<Option<pb::MeasurementResult>>;

#[derive(Default)]
pub struct Recent {
    answers: HashMap<String, (Instant, Answer)>,
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    /// The answer (or the measurement in progress) of `request_id`, if remembered.
    pub fn get(&mut self, request_id: &str, now: Instant) -> Option<Answer> {
        self.expire(now);
        self.answers.get(request_id).map(|(_, a)| a.clone())
    }

    /// Remembers `request_id`'s answer (replacing an older one of the same id).
    pub fn insert(&mut self, request_id: &str, answer: Answer, now: Instant) {
        if request_id.len() > MAX_ID_LEN {
            return;
        }
        self.expire(now);
        while self.answers.len() >= MAX_ENTRIES {
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            self.answers.remove(&id);
        }
        self.answers.insert(request_id.to_string(), (now, answer));
        self.order.push_back((now, request_id.to_string()));
    }

    /// Forgets `request_id` (a cancelled measurement has no answer to give).
    pub fn remove(&mut self, request_id: &str) {
        self.answers.remove(request_id);
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front() {
            let stale = now.saturating_duration_since(*at) >= KEEP;
            // An id inserted again later has a newer entry in the map: only the entry
            // this queue slot stands for goes.
            let current = self.answers.get(id).map(|(t, _)| t) == Some(at);
            if !stale && current {
                break;
            }
            if stale && current {
                self.answers.remove(id);
            }
            self.order.pop_front();
        }
    }
}

/// Waits until `answer` holds the result; None when its measurement was abandoned.
pub async fn wait(mut answer: Answer) -> Option<pb::MeasurementResult> {
    loop {
        if let Some(r) = answer.borrow_and_update().clone() {
            return Some(r);
        }
        if answer.changed().await.is_err() {
            return answer.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: &str) -> Answer {
        let (tx, rx) = watch::channel(None);
        tx.send_replace(Some(pb::MeasurementResult {
            request_id: id.into(),
            ..Default::default()
        }));
        rx
    }

    #[test]
    fn remembers_the_newest_within_the_bound_and_the_time() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        for i in 0..MAX_ENTRIES + 10 {
            r.insert(&format!("r{i}"), done("x"), t0);
        }
        assert_eq!(r.len(), MAX_ENTRIES);
        assert!(r.get("r0", t0).is_none(), "the oldest went first");
        assert!(r.get(&format!("r{}", MAX_ENTRIES + 9), t0).is_some());
        assert!(r.get("r100", t0 + KEEP).is_none(), "expired");
        assert!(r.is_empty());
        r.insert(&"x".repeat(MAX_ID_LEN + 1), done("x"), t0);
        assert!(r.is_empty(), "an oversized id is not kept");
    }

    #[test]
    fn an_id_given_again_keeps_its_newest_answer() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.insert("a", done("first"), t0);
        r.insert("a", done("second"), t0 + KEEP / 2);
        // The first slot expires; the second answer stays.
        let got = r.get("a", t0 + KEEP).unwrap();
        assert_eq!(got.borrow().as_ref().unwrap().request_id, "second");
        r.remove("a");
        assert!(r.get("a", t0 + KEEP).is_none());
    }

    #[tokio::test]
    async fn a_repeat_during_the_measurement_waits_for_its_answer() {
        let (tx, rx) = watch::channel(None);
        let waiter = tokio::spawn(wait(rx.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        tx.send_replace(Some(pb::MeasurementResult {
            request_id: "r1".into(),
            ..Default::default()
        }));
        assert_eq!(waiter.await.unwrap().unwrap().request_id, "r1");
        // Abandoned: the sender is gone without an answer.
        let (tx, rx) = watch::channel(None);
        drop(tx);
        assert!(wait(rx).await.is_none());
    }
}
