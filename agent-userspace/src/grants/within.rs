//! Whether one connect grant is contained in another: the rules of delegation, where a
//! child task may hold at most what its parent holds (docs/identity.md).

use super::{ConnectSpec, Host, mapped, mapped_prefix, net::mask};

/// Whether `child` allows nothing `parent` does not: its ports within the parent's
/// range, its protocols among the parent's, and its hosts within the parent's. A
/// name is within the same name or a wildcard above it, a wildcard within the same or
/// a wider wildcard; a name is never within an address range (its answers are not
/// known in advance, and the name grant lets the task resolve it), and an address
/// never within a name (the addresses a name answers change).
#[must_use]
pub fn connect_within(child: &ConnectSpec, parent: &ConnectSpec) -> bool {
    let ports = parent.port_lo <= child.port_lo && child.port_hi <= parent.port_hi;
    let protos = child.protos & !parent.protos == 0;
    ports && protos && host_within(&child.host, &parent.host)
}

fn host_within(child: &Host, parent: &Host) -> bool {
    match (child, parent) {
        (Host::Net(ca, cp), Host::Net(pa, pp)) => {
            let (cbits, pbits) = (mapped_prefix(*ca, *cp), mapped_prefix(*pa, *pp));
            // An IPv4 range maps below ::ffff:0:0/96, so it never covers IPv6 and back.
            cbits >= pbits && mask(mapped(*ca), pbits) == mask(mapped(*pa), pbits)
        }
        (Host::Name(c), Host::Name(p)) => c == p,
        (Host::Name(c) | Host::Wildcard(c), Host::Wildcard(apex)) => {
            below(c, apex) || matches!(child, Host::Wildcard(_)) && c == apex
        }
        _ => false,
    }
}

/// Whether `name` is one or more labels below `apex`.
fn below(name: &str, apex: &str) -> bool {
    name.strip_suffix(apex)
        .and_then(|head| head.strip_suffix('.'))
        .is_some_and(|head| !head.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(child: &str, parent: &str) -> bool {
        connect_within(&child.parse().unwrap(), &parent.parse().unwrap())
    }

    #[test]
    fn addresses_ports_and_protocols() {
        assert!(within("10.1.2.3:443/tcp", "10.0.0.0/8:443"));
        assert!(within("10.1.0.0/16:443", "10.0.0.0/8:*"));
        assert!(within(
            "10.0.0.0/8:8000-8010/udp",
            "10.0.0.0/8:8000-8100/udp"
        ));
        assert!(
            !within("10.0.0.0/7:443", "10.0.0.0/8:443"),
            "a wider prefix"
        );
        assert!(!within("11.0.0.1:443", "10.0.0.0/8:443"));
        assert!(!within("10.0.0.1:444", "10.0.0.0/8:443"));
        assert!(!within("10.0.0.1:440-443", "10.0.0.0/8:441-443"));
        assert!(!within("10.0.0.1:443", "10.0.0.0/8:443/tcp"), "udp too");
        assert!(!within("10.0.0.1:443/udp", "10.0.0.0/8:443/tcp"));
        assert!(within("[2001:db8::1]:53/udp", "[2001:db8::]/32:53"));
        assert!(
            !within("[2001:db8::1]:53", "0.0.0.0/0:*"),
            "IPv4 covers no IPv6"
        );
        assert!(!within("[::ffff:10.0.0.1]:53", "[2001:db8::]/32:*"));
        assert!(within("127.0.0.1:8080", "127.0.0.1:8080"));
    }

    #[test]
    fn names_and_wildcards() {
        assert!(within("api.example.com:443", "api.example.com:443"));
        assert!(within("api.example.com:443", "*.example.com:443"));
        assert!(within("a.b.example.com:443/tcp", "*.example.com:*"));
        assert!(within("*.b.example.com:443", "*.example.com:443"));
        assert!(within("*.example.com:443", "*.example.com:443"));
        assert!(!within("example.com:443", "*.example.com:443"), "the apex");
        assert!(!within("*.example.com:443", "*.b.example.com:443"));
        assert!(!within("*.example.com:443", "example.com:443"));
        assert!(!within("badexample.com:443", "*.example.com:443"));
        assert!(!within("other.org:443", "example.com:443"));
        assert!(
            !within("example.com:443", "0.0.0.0/0:*"),
            "a name needs a name"
        );
        assert!(!within("93.184.215.14:443", "example.com:443"));
    }
}
