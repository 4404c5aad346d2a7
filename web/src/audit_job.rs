//! An audit started from the web page: the same input parsing, batch call and CSV columns
//! as `geoloc audit` (without resuming: a job lives in the server's memory).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use geoloc_client::audit::{read_inputs, row_values, Input, COLUMNS};
use geoloc_client::{BatchEvent, Client, Located};
use geoloc_proto::v1 as pb;
use serde_json::{json, Value};

/// Most addresses in one audit from the page.
pub const MAX_AUDIT_ROWS: usize = 10_000;
/// Largest pasted list, bytes.
pub const MAX_AUDIT_BYTES: usize = 1 << 20;
/// Audits kept in memory (the oldest finished ones are dropped first).
const MAX_JOBS: usize = 32;

type Outcome = Result<Located, String>;

pub struct AuditJob {
    pub id: String,
    inputs: Vec<Input>,
    created_unix_ms: i64,
    state: Mutex<JobState>,
}

#[derive(Default)]
struct JobState {
    outcomes: Vec<Option<Outcome>>,
    finished: bool,
    error: Option<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl AuditJob {
    /// Parses a pasted list (as `geoloc audit --file`); errors name what is wrong.
    pub fn new(text: &str) -> Result<AuditJob, String> {
        if text.len() > MAX_AUDIT_BYTES {
            return Err(format!("the list is over {MAX_AUDIT_BYTES} bytes"));
        }
        let inputs = read_inputs(text.as_bytes()).map_err(|e| format!("{e:#}"))?;
        if inputs.is_empty() {
            return Err("no addresses (one IP per line, or a CSV with an `ip` column)".into());
        }
        if inputs.len() > MAX_AUDIT_ROWS {
            return Err(format!(
                "{} addresses: at most {MAX_AUDIT_ROWS} per audit from the page (use geoloc audit)",
                inputs.len()
            ));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let outcomes = inputs.iter().map(|i| i.error.clone().map(Err)).collect();
        Ok(AuditJob {
            id: format!("a{:x}-{n}", geoloc_client::unix_ms()),
            inputs,
            created_unix_ms: geoloc_client::unix_ms(),
            state: Mutex::new(JobState {
                outcomes,
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locates every valid input with one `LocateBatch` (stored results reused, as
    /// `geoloc audit` does by default).
    pub async fn run(self: Arc<Self>, mut client: Client) {
        let pending: Vec<usize> = self
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| i.error.is_none())
            .map(|(k, _)| k)
            .collect();
        let req = pb::LocateBatchRequest {
            ips: pending.iter().map(|&k| self.inputs[k].ip.clone()).collect(),
            mode: pb::LocateMode::Unspecified as i32,
            timeout_ms: 0,
            k: 0,
            reuse_stored: true,
            ping_count: 0,
            concurrency: 0,
            ..Default::default()
        };
        let res = if pending.is_empty() {
            Ok(())
        } else {
            client
                .locate_batch(req, |ev| {
                    if let BatchEvent::Done(k, out) = ev {
                        if let Some(&i) = pending.get(k) {
                            let out = (*out).map_err(|f| format!("{}: {}", f.code, f.message));
                            self.lock().outcomes[i] = Some(out);
                        }
                    }
                })
                .await
        };
        let mut st = self.lock();
        let reason = match res {
            Ok(()) => "internal: the coordinator ended the batch without this address".to_string(),
            Err(f) => {
                st.error = Some(f.message.clone());
                format!("{}: {}", f.code, f.message)
            }
        };
        for o in st.outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(Err(reason.clone()));
        }
        st.finished = true;
    }

    fn values(&self, st: &JobState) -> Vec<Option<BTreeMap<&'static str, String>>> {
        st.outcomes
            .iter()
            .zip(&self.inputs)
            .map(|(o, i)| o.as_ref().map(|o| row_values(&i.ip, o)))
            .collect()
    }

    /// Progress and the finished rows, for the page.
    pub fn status(&self) -> Value {
        let st = self.lock();
        let vals = self.values(&st);
        let done = vals.iter().filter(|v| v.is_some()).count();
        let failed = st
            .outcomes
            .iter()
            .filter(|o| matches!(o, Some(Err(_))))
            .count();
        let rows: Vec<Value> = vals
            .iter()
            .map(|v| v.as_ref().map_or(Value::Null, |m| json!(m)))
            .collect();
        let rep: Vec<crate::report::Row> = vals.iter().flatten().map(report_row).collect();
        let s = crate::report::summarize(&rep);
        json!({
            "id": self.id,
            "created_at_unix_ms": self.created_unix_ms,
            "total": self.inputs.len(),
            "done": done,
            "failed": failed,
            "finished": st.finished,
            "error": st.error,
            "columns": COLUMNS,
            "rows": rows,
            "summary": {
                "located": s.located,
                "verdicts": s.verdicts,
                "median_km": crate::report::quantile(&s.distances_km, 0.5),
                "p80_km": crate::report::quantile(&s.distances_km, 0.8),
            },
            "charts": {
                "cdf": crate::report::svg_cdf(&s.distances_km),
                "map": crate::report::svg_map(&rep),
            },
        })
    }

    /// The CSV `geoloc audit` writes with its default columns (finished rows, input order,
    /// up to the first unfinished one).
    pub fn csv(&self) -> Vec<u8> {
        let st = self.lock();
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(COLUMNS);
        for v in self.values(&st) {
            let Some(m) = v else { break };
            let _ = w.write_record(COLUMNS.iter().map(|c| m.get(c).map_or("", String::as_str)));
        }
        w.into_inner().unwrap_or_default()
    }

    /// Regions and estimates of the located rows (as `geoloc locate --geojson`).
    pub fn geojson(&self) -> Vec<u8> {
        let st = self.lock();
        let mut features = Vec::new();
        for (o, i) in st.outcomes.iter().zip(&self.inputs) {
            if let Some(Ok(r)) = o {
                features.extend(geoloc_client::locate::geojson_features(&i.ip, r));
            }
        }
        let fc = geojson::FeatureCollection {
            bbox: None,
            features,
            foreign_members: None,
        };
        serde_json::to_vec(&serde_json::to_value(fc).unwrap_or(Value::Null)).unwrap_or_default()
    }

    fn report_rows(&self) -> Vec<crate::report::Row> {
        let st = self.lock();
        self.values(&st).iter().flatten().map(report_row).collect()
    }

    fn title(&self) -> String {
        format!("geoloc audit of {} addresses", self.inputs.len())
    }

    pub fn report_html(&self) -> Vec<u8> {
        crate::report::html(&self.report_rows(), &self.title(), &now()).into_bytes()
    }

    pub fn report_md(&self) -> Vec<u8> {
        crate::report::markdown(&self.report_rows(), &self.title(), &now()).into_bytes()
    }

    fn finished(&self) -> bool {
        self.lock().finished
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn report_row(m: &BTreeMap<&'static str, String>) -> crate::report::Row {
    crate::report::Row::from_values(|k| m.get(k).cloned())
}

/// Makes room for one more job: drops the oldest finished ones beyond the limit.
pub fn evict(jobs: &mut HashMap<String, Arc<AuditJob>>) {
    while jobs.len() >= MAX_JOBS {
        let oldest = jobs
            .values()
            .filter(|j| j.finished())
            .min_by_key(|j| j.created_unix_ms)
            .map(|j| j.id.clone());
        match oldest {
            Some(id) => {
                jobs.remove(&id);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pasted_list_is_checked() {
        assert!(AuditJob::new("").err().unwrap().contains("no addresses"));
        let j = AuditJob::new("1.1.1.1\nnope\n").unwrap();
        assert_eq!(j.inputs.len(), 2);
        let s = j.status();
        assert_eq!(s["total"], 2);
        // The bad line is a finished error row from the start.
        assert_eq!(s["done"], 1);
        assert!(s["rows"][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid-address"));
        let many = "1.1.1.1\n".repeat(MAX_AUDIT_ROWS + 1);
        assert!(AuditJob::new(&many).err().unwrap().contains("at most"));
        // CSV stops at the first unfinished row.
        assert_eq!(String::from_utf8(j.csv()).unwrap().lines().count(), 1);
    }
}
