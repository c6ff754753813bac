//! `GET /v1/events`: the NDJSON event stream, split into lines whatever the chunks.

use http_body_util::BodyExt as _;
use hyper::{Method, body::Incoming};

use super::{
    Client, ClientError,
    transport::{collect, error_answer, http_error},
};
use crate::protocol::{AuditEvent, EventFilter};

/// Longest NDJSON line accepted from `GET /v1/events`.
pub(super) const MAX_EVENT_LINE: usize = 1 << 20;

impl Client {
    /// `GET /v1/events?...`: the events `filter` selects, read line by line as they
    /// arrive. With `follow`, the stream stays open for new events.
    pub async fn events(&self, filter: &EventFilter) -> Result<EventStream, ClientError> {
        let path = format!("/v1/events{}", super::query_string(filter));
        let response = self.request(Method::GET, &path, None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = collect(response).await?;
            return Err(error_answer(status, &body));
        }
        Ok(EventStream {
            body: response.into_body(),
            lines: LineDecoder::default(),
            done: false,
        })
    }
}

/// The events of `GET /v1/events`, one NDJSON line at a time.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    lines: LineDecoder,
    done: bool,
}

impl EventStream {
    /// The next line as the daemon sent it (without the newline); `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(line) = self.lines.next_line()? {
                return Ok(Some(line));
            }
            if self.done {
                return self.lines.finish();
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data)?;
                    }
                }
                Some(Err(e)) => return Err(http_error(e)),
                None => self.done = true,
            }
        }
    }

    /// The next item; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<EventItem>, ClientError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        parse_event_line(&line).map(Some)
    }
}

/// One line of `GET /v1/events`.
#[derive(Clone, Debug, PartialEq)]
pub enum EventItem {
    Event(Box<AuditEvent>),
    /// `{"lagged": N, ...}`: this follower fell behind and missed N events (the audit
    /// log still has them).
    Lagged(u64),
    /// A JSON object of a kind this client does not know (from a newer daemon).
    Other(String),
}

fn parse_event_line(line: &str) -> Result<EventItem, ClientError> {
    let bad_line = |source| ClientError::BadEventLine {
        line: line.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(line).map_err(bad_line)?;
    if let Some(missed) = value.get("lagged").and_then(serde_json::Value::as_u64) {
        return Ok(EventItem::Lagged(missed));
    }
    if value.get("ts").is_none() || value.get("verdict").is_none() {
        return Ok(EventItem::Other(line.to_owned()));
    }
    serde_json::from_value(value)
        .map(|e| EventItem::Event(Box::new(e)))
        .map_err(bad_line)
}

/// Splits a byte stream into lines, whatever the chunk boundaries. Blank lines are skipped.
#[derive(Debug, Default)]
struct LineDecoder {
    buf: Vec<u8>,
}

impl LineDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        self.buf.extend_from_slice(chunk);
        let pending = self
            .buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(self.buf.len(), |nl| self.buf.len() - nl - 1);
        if pending > MAX_EVENT_LINE {
            return Err(ClientError::EventLineTooLong);
        }
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if let Some(line) = to_line(&line[..nl])? {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }

    /// What is left after the last newline, once the stream has ended.
    fn finish(&mut self) -> Result<Option<String>, ClientError> {
        let rest = std::mem::take(&mut self.buf);
        to_line(&rest)
    }
}

fn to_line(bytes: &[u8]) -> Result<Option<String>, ClientError> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(ClientError::EventLineNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_decoder_handles_any_split() {
        let text = "{\"a\":1}\r\n\n{\"b\":\"é\"}\n{\"c\":3}";
        let bytes = text.as_bytes();
        for size in 1..=bytes.len() {
            let mut dec = LineDecoder::default();
            let mut lines = Vec::new();
            for chunk in bytes.chunks(size) {
                dec.push(chunk).unwrap();
                while let Some(line) = dec.next_line().unwrap() {
                    lines.push(line);
                }
            }
            lines.extend(dec.finish().unwrap());
            assert_eq!(
                lines,
                ["{\"a\":1}", "{\"b\":\"é\"}", "{\"c\":3}"],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn event_lines_are_classified() {
        assert_eq!(
            parse_event_line(r#"{"lagged":3,"note":"x"}"#).unwrap(),
            EventItem::Lagged(3)
        );
        assert!(matches!(
            parse_event_line(r#"{"hello":1}"#).unwrap(),
            EventItem::Other(_)
        ));
        assert!(matches!(
            parse_event_line("not json"),
            Err(ClientError::BadEventLine { .. })
        ));
        // Looks like an event but misses fields.
        assert!(matches!(
            parse_event_line(r#"{"ts":"x","verdict":"denied"}"#),
            Err(ClientError::BadEventLine { .. })
        ));
    }

    #[test]
    fn line_decoder_limits_line_length() {
        let mut dec = LineDecoder::default();
        dec.push(&vec![b'x'; MAX_EVENT_LINE]).unwrap();
        assert!(matches!(
            dec.push(b"xx"),
            Err(ClientError::EventLineTooLong)
        ));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut dec = LineDecoder::default();
        dec.push(b"\xff\xfe\n").unwrap();
        assert!(matches!(
            dec.next_line(),
            Err(ClientError::EventLineNotUtf8(_))
        ));
    }
}
