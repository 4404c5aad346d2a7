//! A simulated probe's request-id cache, as the real agent keeps one: the request ids it
//! answered or is still measuring, bounded to the last [`CACHE_LEN`] and to [`CACHE_AGE`].
//! A `MeasurementRequest` whose id is in the cache is not measured again: its stored answer
//! is sent again, or, while it is still being measured (maybe for a session that has ended
//! since), the session that asked again gets the answer when it is ready.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use geoloc_proto::v1 as pb;

/// Most request ids kept.
pub const CACHE_LEN: usize = 4096;
/// Longest time a request id is kept, from its first arrival.
pub const CACHE_AGE: Duration = Duration::from_secs(600);

/// What to do with a request that just arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Not in the cache: measure it (it is now in flight).
    New,
    /// Answered already: send this answer again, measure nothing.
    Done(Box<pb::MeasurementResult>),
    /// Still being measured: the asking session gets the answer when it is ready.
    InFlight,
}

struct Entry {
    result: Option<pb::MeasurementResult>,
    /// Sessions (numbered by the probe) that asked and wait for the answer.
    waiting: Vec<u64>,
}

/// The cache of one probe.
#[derive(Default)]
pub struct RequestCache {
    entries: HashMap<String, Entry>,
    /// Request ids by first arrival, oldest first.
    order: VecDeque<(String, Instant)>,
}

impl RequestCache {
    /// Request ids kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets the ids past the bound or older than [`CACHE_AGE`] at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if self.order.len() > CACHE_LEN || now.saturating_duration_since(*at) > CACHE_AGE {
                if let Some((id, _)) = self.order.pop_front() {
                    self.entries.remove(&id);
                }
            } else {
                break;
            }
        }
    }

    /// Request `id` arrived on session `session` at `now`. An empty id is never cached
    /// (always [`Seen::New`]).
    pub fn on_request(&mut self, id: &str, session: u64, now: Instant) -> Seen {
        self.expire(now);
        if id.is_empty() {
            return Seen::New;
        }
        if let Some(e) = self.entries.get_mut(id) {
            return match &e.result {
                Some(r) => Seen::Done(Box::new(r.clone())),
                None => {
                    if !e.waiting.contains(&session) {
                        e.waiting.push(session);
                    }
                    Seen::InFlight
                }
            };
        }
        self.entries.insert(
            id.to_string(),
            Entry {
                result: None,
                waiting: vec![session],
            },
        );
        self.order.push_back((id.to_string(), now));
        self.expire(now);
        Seen::New
    }

    /// The measurement of `id` ended with `r`: stores it and returns the sessions waiting
    /// for it, or None when `id` is no longer (or never was) in the cache.
    pub fn complete(&mut self, id: &str, r: &pb::MeasurementResult) -> Option<Vec<u64>> {
        let e = self.entries.get_mut(id)?;
        e.result = Some(r.clone());
        Some(std::mem::take(&mut e.waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> pb::MeasurementResult {
        pb::MeasurementResult {
            request_id: id.into(),
            target: "10.64.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_gets_the_stored_answer_and_measures_nothing() {
        let mut c = RequestCache::default();
        let t = Instant::now();
        assert_eq!(c.on_request("a", 1, t), Seen::New);
        assert_eq!(c.complete("a", &result("a")), Some(vec![1]));
        // On a later session (another replica): the same answer, no new measurement.
        assert_eq!(c.on_request("a", 2, t), Seen::Done(Box::new(result("a"))));
        assert_eq!(c.on_request("b", 2, t), Seen::New);
        assert_eq!(c.len(), 2);
        // An empty id is never cached.
        assert_eq!(c.on_request("", 2, t), Seen::New);
        assert_eq!(c.on_request("", 2, t), Seen::New);
        assert_eq!(c.complete("", &result("")), None);
    }

    #[test]
    fn a_repeat_while_in_flight_waits_for_the_one_measurement() {
        let mut c = RequestCache::default();
        let t = Instant::now();
        assert_eq!(c.on_request("r", 1, t), Seen::New);
        // The session ended; the probe's next session is asked the same id.
        assert_eq!(c.on_request("r", 2, t), Seen::InFlight);
        assert_eq!(c.on_request("r", 2, t), Seen::InFlight);
        assert_eq!(c.complete("r", &result("r")), Some(vec![1, 2]));
        assert_eq!(c.on_request("r", 3, t), Seen::Done(Box::new(result("r"))));
    }

    #[test]
    fn the_cache_keeps_the_last_4096_ids() {
        let mut c = RequestCache::default();
        let t = Instant::now();
        for i in 0..=CACHE_LEN {
            assert_eq!(c.on_request(&format!("id{i}"), 1, t), Seen::New);
        }
        assert_eq!(c.len(), CACHE_LEN);
        // The oldest is forgotten (measured again), the newest kept.
        assert_eq!(c.complete("id0", &result("id0")), None);
        assert_eq!(
            c.on_request(&format!("id{CACHE_LEN}"), 1, t),
            Seen::InFlight
        );
        assert_eq!(c.on_request("id1", 1, t), Seen::InFlight);
        assert_eq!(c.on_request("id0", 1, t), Seen::New);
        assert_eq!(c.len(), CACHE_LEN);
    }

    #[test]
    fn an_id_older_than_ten_minutes_is_forgotten() {
        let mut c = RequestCache::default();
        let t = Instant::now();
        assert_eq!(c.on_request("old", 1, t), Seen::New);
        c.complete("old", &result("old"));
        let later = t + Duration::from_secs(300);
        assert_eq!(c.on_request("new", 1, later), Seen::New);
        assert_eq!(
            c.on_request("old", 1, later),
            Seen::Done(Box::new(result("old")))
        );
        let past = t + CACHE_AGE + Duration::from_secs(1);
        assert_eq!(c.on_request("old", 1, past), Seen::New);
        // "new" arrived 5 min later: still kept.
        assert_eq!(c.on_request("new", 1, past), Seen::InFlight);
    }
}
