//! Recorded RTTs replayed as a [`MeasurementSource`]: a table of (vantage point, target) ->
//! RTT answers every request at once, without a packet. For tests of the locate flow and for
//! evaluations on recorded data (WonderNetwork, RIPE Atlas dumps).
use std::collections::HashMap;
use std::net::IpAddr;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};

use crate::core::measurement::{MeasurementOutcome, MeasurementResult, RawPing};
use crate::core::source::{
    Cost, MeasureSpec, MeasurementSource, Observation, VantagePoint, VantageResult,
};
use crate::error::{CoordinatorError, Result};
use crate::{new_id, unix_ms};

/// Largest recorded RTT accepted, ms (as for a live answer).
const MAX_RTT_MS: f64 = 60_000.0;

/// A fixed set of vantage points and their recorded RTTs to targets.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    points: Vec<VantagePoint>,
    rtts: HashMap<(String, IpAddr), f64>,
}

impl Replay {
    /// `points` measure; `rtts` gives the recorded minimum RTT (ms) of (vantage point id,
    /// target). A pair without a record is a target that stayed silent. Refuses an RTT that
    /// is not finite or outside 0..=60,000 ms, a duplicate vantage point, and a record of an
    /// unknown one.
    pub fn new(
        points: Vec<VantagePoint>,
        rtts: impl IntoIterator<Item = ((String, IpAddr), f64)>,
    ) -> Result<Replay> {
        let bad = |m: String| CoordinatorError::Replay(m);
        for (i, p) in points.iter().enumerate() {
            if points[..i].iter().any(|q| q.id == p.id) {
                return Err(bad(format!("vantage point {:?} listed twice", p.id)));
            }
        }
        let mut table = HashMap::new();
        for ((vp, target), rtt) in rtts {
            if !points.iter().any(|p| p.id == vp) {
                return Err(bad(format!("RTT for unknown vantage point {vp:?}")));
            }
            if !(rtt.is_finite() && (0.0..=MAX_RTT_MS).contains(&rtt)) {
                return Err(bad(format!(
                    "RTT {rtt} ms from {vp:?} to {target} outside 0..={MAX_RTT_MS}"
                )));
            }
            table.insert((vp, target), rtt);
        }
        Ok(Replay {
            points,
            rtts: table,
        })
    }

    fn answer(&self, spec: &MeasureSpec, vp: VantagePoint) -> VantageResult {
        let request_id = new_id();
        let known = self.points.iter().any(|p| p.id == vp.id);
        let m = match self.rtts.get(&(vp.id.clone(), spec.target)) {
            _ if !known => Observation::failed(
                vp.clone(),
                spec.target,
                request_id,
                MeasurementOutcome::Disconnected,
                "not a vantage point of this replay".into(),
            ),
            rtt => {
                let rtts: Vec<f64> = rtt
                    .map(|r| vec![*r; spec.ping_count.max(1) as usize])
                    .unwrap_or_default();
                let result = MeasurementResult {
                    request_id: request_id.clone(),
                    target: spec.target.to_string(),
                    ping: Some(RawPing {
                        min_rtt_ms: rtt.copied(),
                        sent: spec.ping_count.max(1),
                        received: rtts.len() as u32,
                        rtts_ms: rtts,
                        error: String::new(),
                    }),
                    ..MeasurementResult::default()
                };
                Observation {
                    request_id,
                    vantage_point: vp.clone(),
                    target: spec.target,
                    outcome: if rtt.is_some() {
                        MeasurementOutcome::Answered
                    } else {
                        MeasurementOutcome::NoReply
                    },
                    error: String::new(),
                    result,
                    at_unix_ms: unix_ms(),
                }
            }
        };
        VantageResult {
            vantage_point: vp,
            observations: vec![m],
            // Replayed: nothing was sent, nothing spent.
            cost: Cost::default(),
        }
    }
}

impl MeasurementSource for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn vantage_points(&self) -> BoxFuture<'_, Vec<VantagePoint>> {
        Box::pin(std::future::ready(self.points.clone()))
    }

    fn measure(&self, spec: MeasureSpec, from: Vec<VantagePoint>) -> BoxStream<'_, VantageResult> {
        let answers: Vec<VantageResult> =
            from.into_iter().map(|vp| self.answer(&spec, vp)).collect();
        stream::iter(answers).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoloc_engine::LatLon;

    fn vp(id: &str) -> VantagePoint {
        VantagePoint {
            id: id.into(),
            pos: LatLon { lat: 0.0, lon: 0.0 },
        }
    }

    #[test]
    fn hostile_records_are_refused() {
        let t: IpAddr = "192.0.2.1".parse().unwrap();
        for bad in [f64::NAN, f64::INFINITY, -1.0, 60_001.0] {
            let e = Replay::new(vec![vp("a")], [(("a".to_string(), t), bad)]).unwrap_err();
            assert!(e.to_string().contains("outside"), "{e}");
        }
        let e = Replay::new(vec![vp("a")], [(("b".to_string(), t), 1.0)]).unwrap_err();
        assert!(e.to_string().contains("unknown vantage point"), "{e}");
        let e = Replay::new(vec![vp("a"), vp("a")], []).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[tokio::test]
    async fn answers_recorded_pairs_and_silence_otherwise() {
        let t: IpAddr = "192.0.2.1".parse().unwrap();
        let r = Replay::new(vec![vp("a"), vp("b")], [(("a".to_string(), t), 12.5)]).unwrap();
        let spec = MeasureSpec {
            target: t,
            ping_count: 3,
            budget: std::time::Duration::from_secs(1),
            job: None,
        };
        let got: Vec<VantageResult> = r
            .measure(spec, vec![vp("a"), vp("b"), vp("c")])
            .collect()
            .await;
        let outcomes: Vec<_> = got.iter().map(|v| v.observations[0].outcome).collect();
        assert_eq!(
            outcomes,
            [
                MeasurementOutcome::Answered,
                MeasurementOutcome::NoReply,
                MeasurementOutcome::Disconnected
            ]
        );
        assert_eq!(
            got[0].observations[0].result.best_rtt().map(|x| x.0),
            Some(12.5)
        );
        assert_eq!(got[0].cost, Cost::default());
    }
}
