//! DNS messages, parsed and built with hickory-proto only: what a query asks, the
//! replies the responder makes itself, and the addresses of an upstream answer.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, RecordType},
};

/// Query types answered for a granted name: addresses and the records that lead to
/// them. TXT, NULL, ANY and the rest are how DNS tunnels carry data.
pub(crate) const ALLOWED_TYPES: [RecordType; 5] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::HTTPS,
    RecordType::SVCB,
];

/// CNAME links followed from the question's name before giving up on a chain.
const MAX_CHAIN: usize = 16;

/// A well-formed standard query with one question of class IN.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) message: Message,
    /// The question's name in lowercase ASCII, without the trailing dot.
    pub(crate) name: String,
    pub(crate) qtype: RecordType,
}

/// Why a message is not a query the responder answers; the reply to send, if any.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Not even a header: nothing to answer.
    Drop,
    /// FORMERR (or NOTIMP) for this ID and opcode.
    Reply(Vec<u8>),
}

/// Parses what a client sent.
pub(crate) fn parse_query(bytes: &[u8]) -> Result<Query, Rejected> {
    let Ok(message) = Message::from_vec(bytes) else {
        return Err(header_error(bytes, ResponseCode::FormErr));
    };
    let meta = &message.metadata;
    if meta.message_type != MessageType::Query {
        // A response sent to the responder: answering would make a loop.
        return Err(Rejected::Drop);
    }
    if meta.op_code != OpCode::Query {
        return Err(Rejected::Reply(error_reply(&message, ResponseCode::NotImp)));
    }
    let [question] = message.queries.as_slice() else {
        return Err(Rejected::Reply(error_reply(
            &message,
            ResponseCode::FormErr,
        )));
    };
    if question.query_class() != DNSClass::IN || !message.answers.is_empty() {
        return Err(Rejected::Reply(error_reply(
            &message,
            ResponseCode::FormErr,
        )));
    }
    let name = lower_ascii(question.name());
    let qtype = question.query_type();
    Ok(Query {
        message: forwardable(message),
        name,
        qtype,
    })
}

/// Largest EDNS payload size passed on: what a UDP answer may take without IP
/// fragmentation on common paths.
const MAX_PAYLOAD: u16 = 4096;

/// The query as it may leave for the upstream: its header and question only, and an
/// OPT record with nothing but the payload size and the DNSSEC OK bit. Everything else
/// a client can put in a query (EDNS options such as padding, authority and additional
/// records, a signature) carries bytes of its choice to the resolver, a way out for data
/// beside a granted name.
fn forwardable(mut message: Message) -> Message {
    message.authorities.clear();
    message.additionals.clear();
    message.signature = None;
    if let Some(edns) = message.edns.take() {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(edns.max_payload().min(MAX_PAYLOAD));
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        message.edns = Some(ours);
    }
    message
}

/// A name as grants compare it.
pub(crate) fn lower_ascii(name: &hickory_proto::rr::Name) -> String {
    let text = name.to_lowercase().to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// A reply made from the first 4 bytes of something unparseable.
fn header_error(bytes: &[u8], code: ResponseCode) -> Rejected {
    let (Some(&[a, b]), Some(&flags)) =
        (bytes.get(..2).map(|s| [s[0], s[1]]).as_ref(), bytes.get(2))
    else {
        return Rejected::Drop;
    };
    if flags & 0x80 != 0 {
        return Rejected::Drop;
    }
    let op = OpCode::from_u8((flags >> 3) & 0x0f);
    let reply = Message::error_msg(u16::from_be_bytes([a, b]), op, code);
    reply.to_vec().map_or(Rejected::Drop, Rejected::Reply)
}

/// A reply the responder makes itself (REFUSED, FORMERR, SERVFAIL): the ID, opcode,
/// RD bit and question (in its case as sent) of the query, and an OPT record if it had
/// one.
pub(crate) fn error_reply(query: &Message, code: ResponseCode) -> Vec<u8> {
    let mut reply = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries.clone_from(&query.queries);
    if let Some(edns) = &query.edns {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        reply.edns = Some(ours);
    }
    // An error reply with one question always encodes; an empty vec is never sent.
    reply.to_vec().unwrap_or_default()
}

/// Why an upstream answer is not relayed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadAnswer {
    Unparseable,
    /// Another ID, not a response, or another question.
    Mismatch,
}

/// An upstream answer checked against the query.
#[derive(Debug)]
pub(crate) struct Answer {
    /// A/AAAA addresses reached from the question's name through CNAMEs, with TTLs.
    pub(crate) addresses: Vec<(IpAddr, u32)>,
}

/// Checks that `bytes` answers `query` and collects its addresses.
pub(crate) fn check_answer(query: &Message, bytes: &[u8]) -> Result<Answer, BadAnswer> {
    let message = Message::from_vec(bytes).map_err(|_| BadAnswer::Unparseable)?;
    let same_question = message.queries.len() == query.queries.len()
        && message.queries.iter().zip(&query.queries).all(|(a, q)| {
            a.name() == q.name()
                && a.query_type() == q.query_type()
                && a.query_class() == q.query_class()
        });
    if message.metadata.id != query.metadata.id
        || message.metadata.message_type != MessageType::Response
        || !same_question
    {
        return Err(BadAnswer::Mismatch);
    }
    let addresses = match query.queries.first() {
        Some(q) => chain_addresses(&message, q.name()),
        None => Vec::new(),
    };
    Ok(Answer { addresses })
}

/// The A/AAAA records of the answer section for `name`, following CNAMEs.
fn chain_addresses(message: &Message, name: &hickory_proto::rr::Name) -> Vec<(IpAddr, u32)> {
    let mut current = name.clone();
    let mut out = Vec::new();
    for _ in 0..MAX_CHAIN {
        let mut next = None;
        for r in message.answers.iter().filter(|r| r.name == current) {
            match &r.data {
                RData::A(a) => out.push((IpAddr::V4(a.0), r.ttl)),
                RData::AAAA(a) => out.push((IpAddr::V6(a.0), r.ttl)),
                RData::CNAME(c) => next = Some(c.0.clone()),
                _ => {}
            }
        }
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr as _};

    use hickory_proto::{
        op::Query as Q,
        rr::{Name, Record, rdata},
    };

    use super::*;

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        // `from_ascii` keeps the case (`from_str` goes through IDNA, which lowers it).
        m.add_query(Q::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    #[test]
    fn queries_parse_to_lowercase_names_and_keep_the_case_in_replies() {
        let m = query("WwW.Example.COM.", RecordType::A);
        let q = parse_query(&m.to_vec().unwrap()).unwrap();
        assert_eq!(q.name, "www.example.com");
        let reply = Message::from_vec(&error_reply(&q.message, ResponseCode::Refused)).unwrap();
        assert_eq!(reply.metadata.id, m.metadata.id);
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert_eq!(reply.queries[0].name().to_string(), "WwW.Example.COM.");
    }

    #[test]
    fn only_the_question_and_a_bare_opt_record_are_forwarded() {
        use hickory_proto::{op::Edns, rr::rdata::opt::EdnsOption};
        let mut m = query("granted.example.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(65_000).set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(12, vec![0x5a; 4000]));
        m.edns = Some(edns);
        m.add_additional(Record::from_rdata(
            Name::from_str("x.example.").unwrap(),
            60,
            RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        let sent = m.to_vec().unwrap();
        assert!(sent.len() > 4000);
        let q = parse_query(&sent).unwrap();
        let out = q.message.to_vec().unwrap();
        assert!(out.len() < 64, "{} bytes forwarded", out.len());
        let back = Message::from_vec(&out).unwrap();
        assert!(back.additionals.is_empty());
        let e = back.edns.expect("an OPT record, as the client sent one");
        assert_eq!(e.max_payload(), 4096);
        assert!(e.flags().dnssec_ok);
        assert_eq!(e.options().as_ref().len(), 0);
        assert_eq!(back.queries, m.queries);
        assert_eq!(back.metadata.id, m.metadata.id);
    }

    #[test]
    fn garbage_gets_formerr_with_its_id_or_nothing() {
        let Err(Rejected::Reply(r)) = parse_query(&[0x12, 0x34, 0x01, 0, 0xff]) else {
            panic!("expected a FORMERR");
        };
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
        assert!(matches!(parse_query(&[1]), Err(Rejected::Drop)));
        let two = {
            let mut m = query("a.example", RecordType::A);
            m.add_query(Q::query(
                Name::from_str("b.example").unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        };
        assert!(matches!(parse_query(&two), Err(Rejected::Reply(_))));
    }

    #[test]
    fn answers_follow_cname_chains_and_must_match_the_question() {
        let q = query("www.example.com.", RecordType::A);
        let mut a = q.clone().into_response();
        let name = |s: &str| Name::from_str(s).unwrap();
        a.add_answer(Record::from_rdata(
            name("www.example.com."),
            60,
            RData::CNAME(rdata::CNAME(name("edge.cdn.test."))),
        ));
        a.add_answer(Record::from_rdata(
            name("edge.cdn.test."),
            30,
            RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        a.add_answer(Record::from_rdata(
            name("unrelated.test."),
            30,
            RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 9))),
        ));
        let got = check_answer(&q, &a.to_vec().unwrap()).unwrap();
        assert_eq!(got.addresses, [("192.0.2.7".parse().unwrap(), 30)]);
        let mut other = a.clone();
        other.metadata.id = q.metadata.id.wrapping_add(1);
        assert_eq!(
            check_answer(&q, &other.to_vec().unwrap()).unwrap_err(),
            BadAnswer::Mismatch
        );
    }
}
