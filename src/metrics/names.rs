//! The upstream names that may become metric labels (`ns` in the Go
//! ociregistry's series, `registry` in ours), each with a small id that
//! indexes the serving threads' per-upstream counters.
//!
//! Every configured registry gets an id at startup; up to [`MAX_UNLISTED`]
//! more are given out, in order of first sight, to unlisted upstreams that
//! actually answered a pull; everything else counts as `other`. So a client
//! sending any number of made-up `?ns=` values adds no series. Looking an id
//! up reads a fixed array of set-once slots: no lock and no write, so the hit
//! path shares no cache line it writes; only giving out a new id takes a lock.

use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::oci::RegistryName;

/// Ids given out to upstreams that are not in the configuration.
pub const MAX_UNLISTED: usize = 16;
/// The label of everything without an id of its own.
pub const OTHER: &str = "other";

/// An upstream's index into the per-upstream counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamId(pub(super) u16);

impl UpstreamId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

pub struct UpstreamNames {
    /// Filled in order: the first empty slot ends the names given out.
    slots: Box<[OnceLock<Box<str>>]>,
    /// Held only while giving out a new id.
    claim: Mutex<()>,
}

impl Default for UpstreamNames {
    fn default() -> UpstreamNames {
        UpstreamNames::new(std::iter::empty())
    }
}

impl UpstreamNames {
    /// Ids for the `configured` registries, then room for [`MAX_UNLISTED`] more.
    pub fn new<'a>(configured: impl IntoIterator<Item = &'a RegistryName>) -> UpstreamNames {
        let configured: Vec<&RegistryName> = configured.into_iter().collect();
        let names = UpstreamNames {
            slots: (0..configured.len() + MAX_UNLISTED).map(|_| OnceLock::new()).collect(),
            claim: Mutex::new(()),
        };
        for name in configured {
            names.id(name, true);
        }
        names
    }

    /// Rows the per-upstream counters need: one per slot, plus `other`.
    pub fn rows(&self) -> usize {
        self.slots.len() + 1
    }

    pub fn other(&self) -> UpstreamId {
        UpstreamId(self.slots.len() as u16)
    }

    /// The id of `name`; a new one only when `may_claim` (the upstream
    /// answered) and one is left, else `other`.
    pub fn id(&self, name: &RegistryName, may_claim: bool) -> UpstreamId {
        let name = name.as_str();
        if let Some(id) = self.find(name) {
            return id;
        }
        if !may_claim || !label_safe(name) {
            return self.other();
        }
        let _claim = self.claim.lock();
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.get() {
                Some(n) if **n == *name => return UpstreamId(i as u16),
                Some(_) => {}
                None => {
                    let _ = slot.set(name.into());
                    return UpstreamId(i as u16);
                }
            }
        }
        self.other()
    }

    /// The id `name` has, else `other`; never gives one out.
    pub fn known(&self, name: &str) -> UpstreamId {
        self.find(name).unwrap_or_else(|| self.other())
    }

    fn find(&self, name: &str) -> Option<UpstreamId> {
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.get() {
                Some(n) if **n == *name => return Some(UpstreamId(i as u16)),
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// The label of `id`.
    pub fn label(&self, id: UpstreamId) -> &str {
        self.slots.get(id.index()).and_then(|s| s.get()).map_or(OTHER, |n| n)
    }
}

/// Whether a (validated) registry name may be a label value as it is: the
/// characters of a host and port, bounded, and not the `other` label.
fn label_safe(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != OTHER
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RegistryName {
        s.parse().unwrap()
    }

    #[test]
    fn configured_names_first_then_a_bounded_few_then_other() {
        let names = UpstreamNames::new([&name("quay.io"), &name("ghcr.io")]);
        assert_eq!(names.rows(), 2 + MAX_UNLISTED + 1);
        assert_eq!(names.id(&name("quay.io"), false).index(), 0);
        assert_eq!(names.id(&name("ghcr.io"), false).index(), 1);
        // Unlisted and not answered: no id of its own.
        assert_eq!(names.id(&name("evil.example"), false), names.other());
        let ids: Vec<_> =
            (0..MAX_UNLISTED + 5).map(|i| names.id(&name(&format!("r{i}.example")), true).index()).collect();
        assert_eq!(ids[..MAX_UNLISTED], (2..2 + MAX_UNLISTED).collect::<Vec<_>>()[..]);
        assert!(ids[MAX_UNLISTED..].iter().all(|&i| i == names.other().index()));
        assert_eq!(names.label(UpstreamId(2)), "r0.example");
        assert_eq!(names.label(names.other()), OTHER);
        assert_eq!(names.id(&name("r3.example"), true).index(), 5);
    }
}
