//! Where agents may be reached: the rules that keep an agent's URL from turning Baton against
//! its own network (server-side request forgery).
//!
//! - A URL is `https`; plain `http` only for the hosts the deployment lists
//!   ([`HTTP_HOSTS_VAR`]). It carries no credentials, has a host, and is at most
//!   [`MAX_URL_CHARS`] characters long. Cloud metadata host names are refused outright.
//! - Every address its host is, or resolves to, must be public, or inside a network the
//!   deployment lists ([`PRIVATE_NETWORKS_VAR`]). The unspecified, link-local, metadata,
//!   broadcast, multicast and reserved addresses are refused whatever the lists say. IPv6 forms
//!   that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address.
//!
//! These rules are pure. The I/O half, resolving a name and checking what it resolves to at
//! registration and again at each call, is in `baton_aws::invoker::guard`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// The longest agent URL accepted, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// The environment variable listing the hosts that may be called over plain http.
pub const HTTP_HOSTS_VAR: &str = "BATON_HTTP_ENDPOINT_HOSTS";
/// The environment variable listing the non-public networks agents may resolve into.
pub const PRIVATE_NETWORKS_VAR: &str = "BATON_PRIVATE_NETWORKS";

/// Names of cloud metadata services (GCP, AWS, and the bare aliases some images configure).
/// Refused whatever they resolve to: the address rules would catch them too, but a name
/// tells the user more than the address it happens to resolve to.
const METADATA_HOSTS: [&str; 5] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// What a deployment allows beyond the default of https to public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Hosts that may be called over plain http, as a URL writes them (`localhost`,
    /// `127.0.0.1`, `[::1]`), lower case.
    pub http_hosts: Vec<String>,
    /// Non-public networks agents may resolve into (the local stack: loopback; a VPC
    /// deployment: its private ranges). Never-allowed addresses stay refused inside them.
    pub private_networks: Vec<IpNet>,
    /// Whether loopback addresses may be called at all: only the local stack sets it. A
    /// deployment's functions read their policy from the environment, which cannot set it,
    /// so no operator setting lets an agent reach the function's own host.
    pub allow_loopback: bool,
}

impl EndpointPolicy {
    /// Loopback only, over http or https: the local stack and its tests.
    pub fn loopback() -> Self {
        EndpointPolicy {
            http_hosts: vec!["127.0.0.1".into(), "localhost".into(), "[::1]".into()],
            private_networks: vec![
                IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ],
            allow_loopback: true,
        }
    }

    /// Whether `host` (as [`Url::host_str`] gives it) may be called over plain http.
    pub fn allows_http(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.http_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn allows_network(&self, ip: IpAddr) -> bool {
        self.private_networks.iter().any(|net| net.contains(&ip))
    }

    /// Whether the policy can allow an address refused for `refusal` at all.
    fn may_allow(&self, refusal: AddressRefusal) -> bool {
        refusal.is_allowable() && (refusal != AddressRefusal::Loopback || self.allow_loopback)
    }
}

/// Parses a comma-separated list of hosts for [`EndpointPolicy::http_hosts`]. IPv6 addresses
/// may be written with or without brackets.
pub fn parse_http_hosts(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|entry| {
            let bracketed;
            let candidate = if entry.parse::<Ipv6Addr>().is_ok() {
                bracketed = format!("[{entry}]");
                bracketed.as_str()
            } else {
                entry
            };
            match Host::parse(candidate) {
                Ok(host) => Ok(host.to_string().to_ascii_lowercase()),
                Err(e) => Err(format!(
                    "`{entry}` is not a host name or IP address ({e}); write hosts without a scheme or port"
                )),
            }
        })
        .collect()
}

/// Parses a comma-separated list of CIDR networks (`10.0.0.0/8,fd12::/16`) for
/// [`EndpointPolicy::private_networks`].
pub fn parse_private_networks(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| format!("`{entry}` is not a network in CIDR form such as 10.0.0.0/8"))
        })
        .collect()
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    // Never allowed.
    Unspecified,
    LinkLocal,
    Metadata,
    Broadcast,
    Multicast,
    Reserved,
    // Allowed inside the policy's private networks.
    Loopback,
    Private,
    SharedAddressSpace,
    UniqueLocal,
    SpecialPurpose,
}

impl AddressRefusal {
    /// Whether listing a network in the policy can allow the address.
    pub const fn is_allowable(self) -> bool {
        matches!(
            self,
            AddressRefusal::Loopback
                | AddressRefusal::Private
                | AddressRefusal::SharedAddressSpace
                | AddressRefusal::UniqueLocal
                | AddressRefusal::SpecialPurpose
        )
    }

    const fn describe(self) -> &'static str {
        match self {
            AddressRefusal::Unspecified => "the unspecified address (\"this host\")",
            AddressRefusal::LinkLocal => "a link-local address",
            AddressRefusal::Metadata => "a cloud metadata service",
            AddressRefusal::Broadcast => "the broadcast address",
            AddressRefusal::Multicast => "a multicast address",
            AddressRefusal::Reserved => "a reserved address",
            AddressRefusal::Loopback => "a loopback address",
            AddressRefusal::Private => "a private (RFC 1918) address",
            AddressRefusal::SharedAddressSpace => "a carrier-grade NAT (100.64.0.0/10) address",
            AddressRefusal::UniqueLocal => "a unique-local (fc00::/7) address",
            AddressRefusal::SpecialPurpose => "a special-purpose address, not on the internet",
        }
    }
}

impl fmt::Display for AddressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == AddressRefusal::Loopback {
            write!(
                f,
                "{}, which agents of a deployment may never use (only the local stack allows it)",
                self.describe()
            )
        } else if self.is_allowable() {
            write!(
                f,
                "{}; to allow it, list a network that contains it in {PRIVATE_NETWORKS_VAR}",
                self.describe()
            )
        } else {
            write!(f, "{}, which agents may never use", self.describe())
        }
    }
}

/// Checks one address an agent's host is or resolves to.
pub fn check_address(ip: IpAddr, policy: &EndpointPolicy) -> Result<(), AddressRefusal> {
    let embedded = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    match classify(ip) {
        None => Ok(()),
        Some(refusal)
            if policy.may_allow(refusal)
                && (policy.allows_network(ip)
                    || embedded.is_some_and(|v4| policy.allows_network(v4))) =>
        {
            Ok(())
        }
        Some(refusal) => Err(refusal),
    }
}

/// Why an address is not public; None when it is.
fn classify(ip: IpAddr) -> Option<AddressRefusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressRefusal> {
    use AddressRefusal::*;
    let [a, b, c, _] = ip.octets();
    // 169.254.169.254: AWS, GCP, Azure and most others; 100.100.100.200: Alibaba Cloud.
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(Metadata);
    }
    Some(match (a, b, c) {
        (0, _, _) => Unspecified,
        (169, 254, _) => LinkLocal,
        (255, 255, 255) if ip.is_broadcast() => Broadcast,
        (224..=239, _, _) => Multicast,
        (240..=255, _, _) => Reserved,
        (127, _, _) => Loopback,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Private,
        (100, 64..=127, _) => SharedAddressSpace,
        // IETF protocol assignments, documentation and benchmarking ranges.
        (192, 0, 0) | (192, 0, 2) | (198, 18..=19, _) | (198, 51, 100) | (203, 0, 113) => {
            SpecialPurpose
        }
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressRefusal> {
    use AddressRefusal::*;
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // The EC2 instance metadata service over IPv6 (Nitro).
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some(Metadata);
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        0xfe80..=0xfebf => LinkLocal,
        0xff00..=0xffff => Multicast,
        0xfc00..=0xfdff => UniqueLocal,
        // Deprecated site-local, which some networks still route internally.
        0xfec0..=0xfeff => SpecialPurpose,
        // Documentation, and Teredo, whose embedded addresses are obfuscated.
        0x2001 if s[1] == 0x0db8 || s[1] == 0 => SpecialPurpose,
        // Discard-only (100::/64).
        0x0100 if s[1..4] == [0, 0, 0] => SpecialPurpose,
        // The rest of ::/8 that is not an embedded IPv4 form.
        0x0000 => Reserved,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), SIIT
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`). `::` and `::1` are themselves.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let low = v4(s[6], s[7]);
    match s {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] | [0x0064, 0xff9b, 0x0001, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Why an agent URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the URL is {chars} characters long; the most allowed is {MAX_URL_CHARS}")]
    TooLong { chars: usize },
    #[error("it is not an absolute URL ({0})")]
    NotAUrl(String),
    #[error(
        "the scheme `{0}:` is not allowed: agent URLs must be https (or plain http for a host \
         listed in {HTTP_HOSTS_VAR})"
    )]
    Scheme(String),
    #[error("credentials in the URL (`user:password@`) are not allowed")]
    Credentials,
    #[error("it has no host")]
    NoHost,
    #[error(
        "plain http is allowed only for hosts listed in {HTTP_HOSTS_VAR}, and `{host}` is not \
         one of them; use https"
    )]
    PlainHttp { host: String },
    #[error("`{host}` is the name of a cloud metadata service, which agents may never use")]
    MetadataHost { host: String },
    #[error("{}", describe_address(host, *ip, *refusal))]
    Address {
        host: String,
        ip: IpAddr,
        refusal: AddressRefusal,
    },
    #[error("`{host}` does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
}

fn describe_address(host: &str, ip: IpAddr, refusal: AddressRefusal) -> String {
    if host_ip(host) == Some(ip) {
        format!("`{host}` is {refusal}")
    } else {
        format!("`{host}` resolves to {ip}, {refusal}")
    }
}

/// The address a URL host is written as, if it is one (`[::1]` included).
fn host_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The rules that need no deployment settings: length, scheme, credentials, host, metadata
/// names, and literal addresses that are never allowed. A registration passes these on its
/// own; [`check_url`] adds the policy's rules.
pub fn check_url_shape(raw: &str) -> Result<Url, EndpointError> {
    // Counting bytes first keeps a huge URL from being walked char by char.
    if raw.len() > MAX_URL_CHARS && raw.chars().count() > MAX_URL_CHARS {
        return Err(EndpointError::TooLong {
            chars: raw.chars().count(),
        });
    }
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::EmptyHost => EndpointError::NoHost,
        other => EndpointError::NotAUrl(other.to_string()),
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(EndpointError::Scheme(url.scheme().to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(EndpointError::NoHost)?;
    let name = host.strip_suffix('.').unwrap_or(host);
    if METADATA_HOSTS.iter().any(|m| m.eq_ignore_ascii_case(name)) {
        return Err(EndpointError::MetadataHost { host: host.into() });
    }
    if let Some(ip) = literal_ip(&url) {
        if let Some(refusal) = classify(ip).filter(|r| !r.is_allowable()) {
            return Err(EndpointError::Address {
                host: host.into(),
                ip,
                refusal,
            });
        }
    }
    Ok(url)
}

/// Every pure rule: [`check_url_shape`], plain http only for listed hosts, and a literal
/// address only where the policy allows it. A host name still has to be resolved and its
/// addresses checked ([`check_address`]).
pub fn check_url(raw: &str, policy: &EndpointPolicy) -> Result<Url, EndpointError> {
    let url = check_url_shape(raw)?;
    let host = url.host_str().unwrap_or_default();
    if url.scheme() == "http" && !policy.allows_http(host) {
        return Err(EndpointError::PlainHttp { host: host.into() });
    }
    if let Some(ip) = literal_ip(&url) {
        check_address(ip, policy).map_err(|refusal| EndpointError::Address {
            host: host.into(),
            ip,
            refusal,
        })?;
    }
    Ok(url)
}

/// The address a URL's host is written as, if it is one.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EndpointPolicy {
        EndpointPolicy::default()
    }

    /// The probes from the issue, each refused under the default policy.
    const PROBES: [&str; 17] = [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0:22/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::]/",
        "http://localhost/",
        "http://10.0.0.1/",
        "https://192.168.1.1/",
        "file:///etc/passwd",
        "gopher://x/",
        "ftp://x/",
    ];

    #[test]
    fn every_probe_endpoint_is_refused_by_default() {
        for probe in PROBES {
            assert!(check_url(probe, &strict()).is_err(), "{probe} was accepted");
        }
    }

    #[test]
    fn public_https_urls_are_accepted() {
        let url = check_url("https://agents.example.com/v1/run", &strict()).unwrap();
        assert_eq!(url.host_str(), Some("agents.example.com"));
        assert!(check_url("https://8.8.8.8/run", &strict()).is_ok());
        assert!(check_url("https://[2606:4700::1111]/", &strict()).is_ok());
    }

    #[test]
    fn loopback_over_http_is_accepted_under_the_local_policy() {
        let local = EndpointPolicy::loopback();
        for ok in [
            "http://127.0.0.1:8080/",
            "http://localhost:9000/run",
            "http://[::1]:7000/",
            "https://127.0.0.1/",
        ] {
            assert!(check_url(ok, &local).is_ok(), "{ok} was refused");
        }
        // The local policy allows loopback, not the rest of the private ranges.
        assert!(check_url("http://10.0.0.1/", &local).is_err());
        assert!(check_url("https://192.168.1.1/", &local).is_err());
    }

    #[test]
    fn metadata_addresses_are_refused_in_every_spelling() {
        let local = EndpointPolicy::loopback();
        for probe in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://169.254.43518/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
        ] {
            let policy = EndpointPolicy {
                http_hosts: vec![Url::parse(probe).unwrap().host_str().unwrap().into()],
                ..local.clone()
            };
            match check_url(probe, &policy) {
                Err(EndpointError::Address { refusal, .. }) => {
                    assert_eq!(refusal, AddressRefusal::Metadata, "{probe}")
                }
                other => panic!("{probe}: {other:?}"),
            }
        }
    }

    #[test]
    fn never_allowed_addresses_stay_refused_inside_listed_networks() {
        let everything = EndpointPolicy {
            http_hosts: vec![],
            private_networks: parse_private_networks("0.0.0.0/0,::/0").unwrap(),
            allow_loopback: false,
        };
        for (ip, refusal) in [
            ("0.0.0.0", AddressRefusal::Unspecified),
            ("0.1.2.3", AddressRefusal::Unspecified),
            ("::", AddressRefusal::Unspecified),
            ("169.254.1.1", AddressRefusal::LinkLocal),
            ("fe80::1", AddressRefusal::LinkLocal),
            ("169.254.169.254", AddressRefusal::Metadata),
            ("fd00:ec2::254", AddressRefusal::Metadata),
            ("255.255.255.255", AddressRefusal::Broadcast),
            ("224.0.0.1", AddressRefusal::Multicast),
            ("ff02::1", AddressRefusal::Multicast),
            ("240.0.0.1", AddressRefusal::Reserved),
            ("::ffff:0.0.0.0", AddressRefusal::Unspecified),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(check_address(ip, &everything), Err(refusal), "{ip}");
        }
        // fc00::/7 allowed does not open the metadata service inside it.
        let unique_local = EndpointPolicy {
            http_hosts: vec![],
            private_networks: parse_private_networks("fc00::/7").unwrap(),
            allow_loopback: false,
        };
        assert!(check_address("fd12::1".parse().unwrap(), &unique_local).is_ok());
        assert_eq!(
            check_address("fd00:ec2::254".parse().unwrap(), &unique_local),
            Err(AddressRefusal::Metadata)
        );
    }

    #[test]
    fn loopback_is_refused_in_a_deployment_whatever_the_lists_say() {
        let deployment = EndpointPolicy {
            allow_loopback: false,
            ..EndpointPolicy::loopback()
        };
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                check_address(ip, &deployment),
                Err(AddressRefusal::Loopback),
                "{ip}"
            );
            assert!(
                check_address(ip, &EndpointPolicy::loopback()).is_ok(),
                "{ip}"
            );
        }
        assert!(AddressRefusal::Loopback
            .to_string()
            .contains("only the local stack"));
    }

    #[test]
    fn private_addresses_are_refused_unless_their_network_is_listed() {
        let vpc = EndpointPolicy {
            http_hosts: vec![],
            private_networks: parse_private_networks("10.0.0.0/8").unwrap(),
            allow_loopback: false,
        };
        for (ip, refusal) in [
            ("127.0.0.1", AddressRefusal::Loopback),
            ("::1", AddressRefusal::Loopback),
            ("10.0.0.1", AddressRefusal::Private),
            ("172.16.5.4", AddressRefusal::Private),
            ("192.168.1.1", AddressRefusal::Private),
            ("100.64.0.1", AddressRefusal::SharedAddressSpace),
            ("fd12:3456::1", AddressRefusal::UniqueLocal),
            ("::ffff:10.0.0.1", AddressRefusal::Private),
            ("::10.0.0.1", AddressRefusal::Private),
            ("64:ff9b::127.0.0.1", AddressRefusal::Loopback),
            ("198.18.0.1", AddressRefusal::SpecialPurpose),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(check_address(ip, &strict()), Err(refusal), "{ip}");
        }
        assert!(check_address("10.1.2.3".parse().unwrap(), &vpc).is_ok());
        assert!(check_address("::ffff:10.1.2.3".parse().unwrap(), &vpc).is_ok());
        assert!(check_address("192.168.1.1".parse().unwrap(), &vpc).is_err());
        assert!(check_address("8.8.8.8".parse().unwrap(), &strict()).is_ok());
        assert!(check_address("::ffff:8.8.8.8".parse().unwrap(), &strict()).is_ok());
    }

    #[test]
    fn other_schemes_are_refused_naming_the_scheme() {
        for (probe, scheme) in [
            ("file:///etc/passwd", "file"),
            ("gopher://x/", "gopher"),
            ("ftp://x/", "ftp"),
            ("data:text/plain,hi", "data"),
            ("javascript:alert(1)", "javascript"),
            ("ws://example.com/", "ws"),
        ] {
            let err = check_url(probe, &strict()).unwrap_err();
            assert_eq!(err, EndpointError::Scheme(scheme.into()), "{probe}");
            assert!(err.to_string().contains(&format!("`{scheme}:`")), "{err}");
        }
    }

    #[test]
    fn plain_http_needs_the_host_on_the_list() {
        let err = check_url("http://agents.example.com/", &strict()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plain http is allowed only for hosts listed in BATON_HTTP_ENDPOINT_HOSTS, and \
             `agents.example.com` is not one of them; use https"
        );
        let listed = EndpointPolicy {
            http_hosts: parse_http_hosts("Agents.Example.com").unwrap(),
            private_networks: vec![],
            allow_loopback: false,
        };
        assert!(check_url("http://agents.example.com/", &listed).is_ok());
        assert!(check_url("http://other.example.com/", &listed).is_err());
    }

    #[test]
    fn long_urls_credentials_and_missing_hosts_are_refused() {
        let huge = format!("https://example.com/{}", "a".repeat(100 * 1024));
        assert!(matches!(
            check_url(&huge, &strict()),
            Err(EndpointError::TooLong { .. })
        ));
        let longest = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS - 20));
        assert_eq!(longest.chars().count(), MAX_URL_CHARS);
        assert!(check_url(&longest, &strict()).is_ok());
        assert_eq!(
            check_url("https://user:pass@example.com/", &strict()),
            Err(EndpointError::Credentials)
        );
        assert_eq!(
            check_url("https://user@example.com/", &strict()),
            Err(EndpointError::Credentials)
        );
        assert_eq!(
            check_url("https:///", &strict()),
            Err(EndpointError::NoHost)
        );
        assert!(matches!(
            check_url("not a url", &strict()),
            Err(EndpointError::NotAUrl(_))
        ));
    }

    #[test]
    fn metadata_names_are_refused_whatever_they_resolve_to() {
        let anything = EndpointPolicy {
            http_hosts: vec!["metadata".into(), "metadata.google.internal".into()],
            private_networks: parse_private_networks("0.0.0.0/0").unwrap(),
            allow_loopback: false,
        };
        for probe in [
            "http://metadata.google.internal/",
            "http://METADATA.google.internal./",
            "http://metadata/",
            "https://instance-data/latest/",
        ] {
            assert!(
                matches!(
                    check_url(probe, &anything),
                    Err(EndpointError::MetadataHost { .. })
                ),
                "{probe}"
            );
        }
    }

    #[test]
    fn refusals_say_what_and_how_to_allow_it() {
        let err = check_url("https://10.0.0.1/", &strict()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`10.0.0.1` is a private (RFC 1918) address; to allow it, list a network that \
             contains it in BATON_PRIVATE_NETWORKS"
        );
        let resolved = EndpointError::Address {
            host: "evil.example".into(),
            ip: "169.254.169.254".parse().unwrap(),
            refusal: AddressRefusal::Metadata,
        };
        assert_eq!(
            resolved.to_string(),
            "`evil.example` resolves to 169.254.169.254, a cloud metadata service, which agents \
             may never use"
        );
    }

    #[test]
    fn policy_lists_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_http_hosts(" 127.0.0.1, localhost ,[::1],::1,").unwrap(),
            vec!["127.0.0.1", "localhost", "[::1]", "[::1]"]
        );
        assert_eq!(parse_http_hosts("").unwrap(), Vec::<String>::new());
        assert!(parse_http_hosts("http://x").is_err());
        assert!(parse_http_hosts("host:8080").is_err());
        let nets = parse_private_networks("10.1.2.3/8, ::1/128").unwrap();
        assert_eq!(nets[0].to_string(), "10.0.0.0/8");
        assert!(parse_private_networks("10.0.0.0").is_err());
        assert!(parse_private_networks("10.0.0.0/33").is_err());
    }
}
