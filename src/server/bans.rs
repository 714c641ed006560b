//! Bans: which addresses may not connect, why, by whom and until when.
//!
//! Admission checks every new connection against them; operators add and
//! remove them through the dispatcher. When history is kept in SQLite the
//! bans are kept in the same file and survive a restart; otherwise they
//! last as long as the server. An expired ban is forgotten the next time
//! the list is looked at.
//!
//! Not here: kicking the members a new ban matches (the hub does), or
//! deciding who is an operator.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, warn};

use crate::store::{BanRecord, Store};

/// An address, or a block of them: `10.0.0.7`, `10.0.0.0/8`,
/// `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The one address `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Cidr { net: ip, prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a CIDR block such as 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix == 0 || prefix > max {
            return Err(bad());
        }
        // Kept normalised, so that the same block is the same ban.
        let net = match net {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
        }
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub target: Cidr,
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch; `None`: until unbanned.
    pub until_ms: Option<u64>,
    pub by: String,
    pub since_ms: u64,
}

impl Ban {
    /// How a banned client is told: `banned: REASON (until ...)`.
    pub fn message(&self) -> String {
        let mut text = String::from("banned");
        if let Some(reason) = &self.reason {
            text.push_str(": ");
            text.push_str(reason);
        }
        text.push_str(&match self.until_ms {
            Some(until) => format!(" (until {} UTC)", crate::clock::date_time(until)),
            None => " (until unbanned)".to_string(),
        });
        text
    }

    fn record(&self) -> BanRecord {
        BanRecord {
            target: self.target.to_string(),
            reason: self.reason.clone(),
            until_ms: self.until_ms,
            by: self.by.clone(),
            since_ms: self.since_ms,
        }
    }
}

/// The server's bans.
#[derive(Default)]
pub struct Bans {
    list: Mutex<Vec<Ban>>,
    store: Option<Arc<dyn Store>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl fmt::Debug for Bans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bans")
            .field("count", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Bans {
    /// The bans `store` keeps (none without one).
    pub fn load(store: Option<Arc<dyn Store>>) -> Bans {
        let mut list = Vec::new();
        if let Some(store) = &store {
            match store.load_bans() {
                Ok(records) => {
                    for r in records {
                        match r.target.parse::<Cidr>() {
                            Ok(target) => list.push(Ban {
                                target,
                                reason: r.reason,
                                until_ms: r.until_ms,
                                by: r.by,
                                since_ms: r.since_ms,
                            }),
                            Err(e) => warn!(error = %e, "ignoring a stored ban"),
                        }
                    }
                }
                Err(e) => error!(error = %e, "cannot read the stored bans"),
            }
        }
        Bans {
            list: Mutex::new(list),
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Ban>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired bans, from memory and from the store.
    fn prune(&self, list: &mut Vec<Ban>, now: u64) {
        list.retain(|b| {
            let live = b.until_ms.is_none_or(|until| until > now);
            if !live {
                if let Some(store) = &self.store {
                    let _ = store.delete_ban(&b.target.to_string());
                }
            }
            live
        });
    }

    /// The ban matching `ip`, if any.
    pub fn find(&self, ip: IpAddr) -> Option<Ban> {
        let mut list = self.lock();
        if list.is_empty() {
            return None;
        }
        self.prune(&mut list, now_ms());
        list.iter().find(|b| b.target.contains(ip)).cloned()
    }

    /// Adds a ban, replacing one on the same target, and keeps it.
    pub fn add(&self, ban: Ban) {
        if let Some(store) = &self.store {
            if let Err(e) = store.save_ban(&ban.record()) {
                error!(error = %e, target = %ban.target, "cannot keep the ban; it holds until restart");
            }
        }
        let mut list = self.lock();
        list.retain(|b| b.target != ban.target);
        list.push(ban);
    }

    /// Removes the ban on exactly `target`; whether there was one.
    pub fn remove(&self, target: &Cidr) -> bool {
        let mut list = self.lock();
        let before = list.len();
        list.retain(|b| b.target != *target);
        let removed = list.len() < before;
        if removed {
            if let Some(store) = &self.store {
                let _ = store.delete_ban(&target.to_string());
            }
        }
        removed
    }

    /// Every ban in force, oldest first.
    pub fn list(&self) -> Vec<Ban> {
        let mut list = self.lock();
        self.prune(&mut list, now_ms());
        list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_blocks() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one: Cidr = "192.168.1.5".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.5");
        assert!(!one.contains("192.168.1.6".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0.0/0", "nope", "10.0.0/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expired_bans_are_forgotten() {
        let bans = Bans::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        bans.add(Ban {
            target: Cidr::host(ip),
            reason: Some("spam".into()),
            until_ms: Some(now_ms() - 1),
            by: "root".into(),
            since_ms: 0,
        });
        assert!(bans.find(ip).is_none());
        bans.add(Ban {
            target: "10.0.0.0/24".parse().unwrap(),
            reason: None,
            until_ms: None,
            by: "root".into(),
            since_ms: 0,
        });
        let found = bans.find(ip).unwrap();
        assert_eq!(found.message(), "banned (until unbanned)");
        assert!(bans.remove(&"10.0.0.0/24".parse().unwrap()));
        assert!(bans.find(ip).is_none());
        assert!(bans.list().is_empty());
    }
}
