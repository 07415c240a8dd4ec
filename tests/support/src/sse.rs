//! A whole Server-Sent Events body, split into its events.

/// One event: its `event:` name if any, and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

/// The events of `text`, in order. An event ends at a blank line; a
/// trailing event without one still counts (the caller checks framing).
pub fn events(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data: Option<String> = None;
            for line in block.lines() {
                if let Some(name) = field(line, "event") {
                    event = Some(name.to_owned());
                } else if let Some(more) = field(line, "data") {
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(more);
                        }
                        None => data = Some(more.to_owned()),
                    }
                }
            }
            Some(Event { event, data: data? })
        })
        .collect()
}

/// The value of `name: value` (one optional space after the colon).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_plain_events() {
        let body = "event: response.created\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n: comment\n\ndata: [DONE]\n\n";
        let e = events(body);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].event.as_deref(), Some("response.created"));
        assert_eq!(e[0].data, "{\"a\":1}");
        assert_eq!((e[1].event.as_deref(), e[1].data.as_str()), (None, "x\ny"));
        assert_eq!(e[2].data, "[DONE]");
    }
}
