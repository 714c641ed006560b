//! Who may come in: at most `max_clients` connections in all and
//! `max_per_ip` from one address (IPv6 counted per `ipv6_prefix`), both
//! counting connections still in their TLS handshake.
//!
//! A connection over a limit is not closed in silence: it is given a
//! [`Refusal`], which the session sends once the protocol is known (after
//! the TLS handshake, on a TLS listener), in the client's own format. So
//! that refusing cannot itself exhaust the server, at most
//! [`MAX_REFUSING`] refusals are under way at once; past that a connection
//! is closed at once.
//!
//! Not here: accepting sockets, or what a session does once admitted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::proto::json::ErrorCode;
use crate::server::bans::Bans;

/// Refusals being told at once; more are closed without a word. A refusal
/// costs a task and a socket for up to the register timeout, and a flood
/// of connections must not turn that into a flood of tasks.
pub const MAX_REFUSING: usize = 64;

/// Why a connection is not admitted. The text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ServerFull {
        max: usize,
    },
    TooManyFromAddress {
        limit: usize,
    },
    /// The address is banned; the text says why and until when.
    Banned(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::ServerFull { max } => {
                format!("the server is full ({max} clients); try again later")
            }
            Refusal::TooManyFromAddress { limit } => {
                format!("too many connections from your address (limit {limit})")
            }
            Refusal::Banned(why) => why.clone(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::ServerFull { .. } => ErrorCode::ServerFull,
            Refusal::TooManyFromAddress { .. } => ErrorCode::TooManyConnections,
            Refusal::Banned(_) => ErrorCode::Banned,
        }
    }
}

/// What [`Admission::admit`] decided.
pub enum Admit {
    /// Admitted: hold the ticket for the connection's life.
    In(Ticket),
    /// Not admitted: tell the client why, holding the ticket meanwhile.
    Refused(Refusal, OwnedSemaphorePermit),
    /// Not admitted, and too many refusals are under way to tell it.
    Drop(Refusal),
}

/// An admitted connection's place: released when dropped.
pub struct Ticket {
    _total: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

/// The server's admission counts, shared by every listener.
pub struct Admission {
    total: Arc<Semaphore>,
    max_clients: usize,
    per_address: Option<Arc<PerAddress>>,
    refusing: Arc<Semaphore>,
    bans: Arc<Bans>,
}

impl Admission {
    pub fn new(config: &ServerConfig, bans: Arc<Bans>) -> Admission {
        Admission {
            total: Arc::new(Semaphore::new(config.max_clients)),
            max_clients: config.max_clients,
            per_address: (config.max_per_ip > 0).then(|| {
                Arc::new(PerAddress {
                    limit: config.max_per_ip,
                    ipv6_prefix: config.ipv6_prefix,
                    counts: Mutex::default(),
                })
            }),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            bans,
        }
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Admit {
        let refused = |refusal| match self.refusing.clone().try_acquire_owned() {
            Ok(permit) => Admit::Refused(refusal, permit),
            Err(_) => Admit::Drop(refusal),
        };
        if let Some(ban) = self.bans.find(ip) {
            return refused(Refusal::Banned(ban.message()));
        }
        let address = match &self.per_address {
            Some(per) => match PerAddress::claim(per, ip) {
                Some(slot) => Some(slot),
                None => return refused(Refusal::TooManyFromAddress { limit: per.limit }),
            },
            None => None,
        };
        match self.total.clone().try_acquire_owned() {
            Ok(total) => Admit::In(Ticket {
                _total: total,
                _address: address,
            }),
            Err(_) => refused(Refusal::ServerFull {
                max: self.max_clients,
            }),
        }
    }

    /// Connections from `ip`'s address (or prefix) now, for tests and logs.
    pub fn from_address(&self, ip: IpAddr) -> usize {
        self.per_address.as_ref().map_or(0, |per| {
            let key = address_key(ip, per.ipv6_prefix);
            per.lock().get(&key).copied().unwrap_or(0)
        })
    }
}

/// Connections per address. The map holds only addresses with a
/// connection, so it is bounded by `max_clients`.
struct PerAddress {
    limit: usize,
    ipv6_prefix: u8,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim(this: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip, this.ipv6_prefix);
        let mut counts = this.lock();
        let n = counts.entry(key).or_insert(0);
        if *n >= this.limit {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            per: this.clone(),
            key,
        })
    }
}

/// One connection's count against its address.
struct AddressSlot {
    per: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.per.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The address connections are counted under: an IPv4 address as it is
/// (also when it arrives mapped into IPv6), an IPv6 address cut to its
/// first `prefix` bits.
pub fn address_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_clients: usize, max_per_ip: usize) -> Admission {
        Admission::new(
            &ServerConfig {
                max_clients,
                max_per_ip,
                ..ServerConfig::default()
            },
            Arc::default(),
        )
    }

    #[test]
    fn per_address_limit_frees_its_slot_when_a_connection_ends() {
        let a = admission(100, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = a.admit(ip);
        let second = a.admit(ip);
        assert!(matches!(first, Admit::In(_)) && matches!(second, Admit::In(_)));
        assert!(matches!(
            a.admit(ip),
            Admit::Refused(Refusal::TooManyFromAddress { limit: 2 }, _)
        ));
        assert!(matches!(a.admit(other), Admit::In(_)));
        drop(first);
        assert_eq!(a.from_address(ip), 1);
        assert!(matches!(a.admit(ip), Admit::In(_)));
    }

    #[test]
    fn zero_means_no_limit_per_address() {
        let a = admission(100, 0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..50).map(|_| a.admit(ip)).collect();
        assert!(held.iter().all(|t| matches!(t, Admit::In(_))));
    }

    #[test]
    fn the_total_refuses_too_and_refusals_are_bounded() {
        let a = admission(1, 0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let _in = a.admit(ip);
        let refusals: Vec<_> = (0..MAX_REFUSING).map(|_| a.admit(ip)).collect();
        assert!(refusals
            .iter()
            .all(|r| matches!(r, Admit::Refused(Refusal::ServerFull { max: 1 }, _))));
        assert!(matches!(a.admit(ip), Admit::Drop(_)));
        drop(refusals);
        assert!(matches!(a.admit(ip), Admit::Refused(..)));
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str, p| address_key(s.parse().unwrap(), p);
        assert_eq!(k("2001:db8:1:2:aaaa::1", 64), k("2001:db8:1:2:bbbb::9", 64));
        assert_ne!(k("2001:db8:1:2::1", 64), k("2001:db8:1:3::1", 64));
        assert_ne!(k("2001:db8:1:2::1", 128), k("2001:db8:1:2::2", 128));
        assert_eq!(k("::ffff:10.0.0.1", 64), k("10.0.0.1", 64));
        let a = Admission::new(
            &ServerConfig {
                max_per_ip: 1,
                ..ServerConfig::default()
            },
            Arc::default(),
        );
        let _one = a.admit("2001:db8::1".parse().unwrap());
        assert!(matches!(
            a.admit("2001:db8::2".parse().unwrap()),
            Admit::Refused(..)
        ));
    }
}
