//! Calls of the typed [`Client`] used by the web interface (`geoloc-web`) and `geoloc
//! enrich`: a stored result by id or by address, and a batch with per-address events.
use geoloc_proto::v1 as pb;

use crate::{Client, Failure, Located};

impl Clone for Client {
    /// A second handle on the same connection (tonic channels are cheap to clone).
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
            url: self.url.clone(),
            opts: self.opts.clone(),
            bearer: self.bearer.clone(),
        }
    }
}

/// One event of [`Client::locate_batch`]: the position of the address in the request and
/// its outcome (the address itself when it failed, with the error as `geoloc audit` writes
/// it: `code: message`).
#[derive(Debug, Clone)]
pub enum BatchEvent {
    Progress(usize, pb::Progress),
    /// Boxed: a located answer is large and progress events are many.
    Done(usize, Box<Result<Located, Failure>>),
}

impl Client {
    /// A stored result by its id (`GetResult`). `Ok(None)` when the coordinator has none.
    pub async fn get_result(&mut self, result_id: &str) -> Result<Option<Located>, Failure> {
        self.stored(pb::get_result_request::Key::ResultId(result_id.to_string()))
            .await
    }

    /// The newest stored result for an address (`GetResult` by address), without measuring.
    /// `Ok(None)` when the coordinator has none.
    pub async fn stored_result(&mut self, ip: &str) -> Result<Option<Located>, Failure> {
        self.stored(pb::get_result_request::Key::Ip(ip.to_string()))
            .await
    }

    async fn stored(
        &mut self,
        key: pb::get_result_request::Key,
    ) -> Result<Option<Located>, Failure> {
        let req = pb::GetResultRequest { key: Some(key) };
        match self.inner.get_result(self.request(req)).await {
            Ok(r) => match r.into_inner().result {
                None => Ok(None),
                Some(r) => Located::try_from(&r)
                    .map(Some)
                    .map_err(|e| Failure::new("bad-result", e.to_string())),
            },
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                Err(Failure::new(&crate::invalid_code(&s), s.message()))
            }
            Err(s) => Err(self.failure(&s)),
        }
    }

    /// Locates `req.ips` with one `LocateBatch` call; `on_event` gets each progress and
    /// each final outcome (a result that fails the checks of `geoloc_proto::convert` is a
    /// `bad-result` failure). Returns Err when the stream itself fails.
    pub async fn locate_batch(
        &mut self,
        req: pb::LocateBatchRequest,
        mut on_event: impl FnMut(BatchEvent),
    ) -> Result<(), Failure> {
        let n = req.ips.len();
        let mut stream = self
            .inner
            .locate_batch(self.request(req))
            .await
            .map_err(|s| self.failure(&s))?
            .into_inner();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(s) => return Err(self.failure(&s)),
            };
            let i = msg.index as usize;
            if i >= n {
                continue;
            }
            match msg.event {
                Some(pb::locate_event::Event::Progress(p)) => on_event(BatchEvent::Progress(i, p)),
                Some(pb::locate_event::Event::Result(r)) => on_event(BatchEvent::Done(
                    i,
                    Box::new(
                        Located::try_from(&r)
                            .map_err(|e| Failure::new("bad-result", e.to_string())),
                    ),
                )),
                Some(pb::locate_event::Event::Error(e)) => {
                    on_event(BatchEvent::Done(i, Box::new(Err(Failure::from_pb(&e)))))
                }
                None => {}
            }
        }
    }
}
