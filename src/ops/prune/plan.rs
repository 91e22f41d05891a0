//! Which images a prune removes, and what goes with them: pure, over a
//! catalog. Manifests and blobs are reference-counted over every image, so
//! removing an image frees only what no image that stays uses (an index's
//! platform manifest another kept image lists, a layer two images share).
//! Pinned images always stay.

use std::collections::{HashMap, HashSet};

use crate::config::patterns::Patterns;
use crate::oci::Digest;
use crate::store::catalog::Image;

/// What to prune. Every filter given must match; without `max_size` every
/// matching image goes, with it the least recently pulled matching images go
/// until the cache is no larger than `max_size`.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    pub patterns: Option<Patterns>,
    /// Created (first fetched) before these unix seconds.
    pub created_before: Option<u64>,
    /// Last pulled before these unix seconds (never pulled: created before them).
    pub accessed_before: Option<u64>,
    /// Bytes the whole cache may hold afterwards.
    pub max_size: Option<u64>,
    /// Images removed at most (the Go `count`).
    pub count: Option<usize>,
}

impl Criteria {
    /// Whether anything selects images at all (a prune without it would take everything).
    pub fn selects(&self) -> bool {
        self.patterns.is_some()
            || self.created_before.is_some()
            || self.accessed_before.is_some()
            || self.max_size.is_some()
    }

    fn matches(&self, image: &Image) -> bool {
        self.patterns.as_ref().is_none_or(|p| p.matches_any(&image.references()))
            && self.created_before.is_none_or(|t| image.created.is_some_and(|c| c < t))
            && self.accessed_before.is_none_or(|t| image.pulled.or(image.created).is_some_and(|p| p < t))
    }
}

/// The images prune must never remove.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    /// References pinned exactly (the pins file).
    pub exact: HashSet<String>,
    /// Patterns (the `pinned:` config list).
    pub patterns: Option<Patterns>,
}

impl Pins {
    pub fn holds(&self, image: &Image) -> bool {
        let references = image.references();
        references.iter().any(|r| self.exact.contains(r))
            || self.patterns.as_ref().is_some_and(|p| p.matches_any(&references))
    }
}

/// A prune's decision.
#[derive(Debug, Default)]
pub struct Plan {
    /// The images removed, in the order chosen.
    pub images: Vec<Image>,
    /// Manifests no kept image uses, with their sizes.
    pub manifests: Vec<(Digest, u64)>,
    /// Blobs no kept image uses, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// How many of `manifests` and of `blobs` each image frees, in order:
    /// image `i`'s are the next ones in each list after those of the images before it.
    pub freed_by: Vec<(usize, usize)>,
    /// Pinned images that matched and stay.
    pub pinned: usize,
    /// Bytes of every committed object before, and freed.
    pub total: u64,
    pub freed: u64,
}

/// Decides what goes. `sizes` has every committed object's size.
pub fn plan(catalog: &[Image], sizes: &HashMap<Digest, u64>, criteria: &Criteria, pins: &Pins) -> Plan {
    let mut uses: HashMap<&Digest, usize> = HashMap::new();
    for image in catalog {
        for d in unique(&image.manifests).chain(unique(&image.blobs)) {
            *uses.entry(d).or_default() += 1;
        }
    }
    let mut plan = Plan { total: sizes.values().sum(), ..Plan::default() };
    let mut candidates: Vec<&Image> = Vec::new();
    for image in catalog.iter().filter(|i| criteria.matches(i)) {
        if pins.holds(image) {
            plan.pinned += 1;
        } else {
            candidates.push(image);
        }
    }
    if criteria.max_size.is_some() {
        candidates.sort_by(|a, b| a.last_used().cmp(&b.last_used()).then_with(|| a.reference().cmp(&b.reference())));
    }
    for image in candidates {
        if criteria.max_size.is_some_and(|max| plan.total - plan.freed <= max) {
            break;
        }
        if criteria.count.is_some_and(|n| plan.images.len() >= n) {
            break;
        }
        let before = (plan.manifests.len(), plan.blobs.len());
        for (list, out) in [(&image.manifests, &mut plan.manifests), (&image.blobs, &mut plan.blobs)] {
            for d in unique(list) {
                let n = uses.get_mut(d).expect("counted above");
                *n -= 1;
                if *n == 0 {
                    let size = sizes.get(d).copied().unwrap_or(0);
                    plan.freed += size;
                    out.push((d.clone(), size));
                }
            }
        }
        plan.freed_by.push((plan.manifests.len() - before.0, plan.blobs.len() - before.1));
        plan.images.push(image.clone());
    }
    plan
}

fn unique(list: &[Digest]) -> impl Iterator<Item = &Digest> {
    let mut seen = HashSet::new();
    list.iter().filter(move |d| seen.insert(*d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::store::catalog::{ImageName, ImageType};

    fn d(s: &str) -> Digest {
        Digest::of(Algorithm::Sha256, s.as_bytes())
    }

    fn image(tag: &str, manifests: &[&str], blobs: &[&str], pulled: u64) -> Image {
        let key = crate::store::TagKey {
            registry: "quay.io".parse().unwrap(),
            repo: "r".parse().unwrap(),
            tag: tag.parse().unwrap(),
        };
        Image {
            name: ImageName::Tag(key),
            digest: d(manifests[0]),
            kind: ImageType::Image,
            created: Some(1),
            pulled: Some(pulled),
            size: 0,
            manifests: manifests.iter().map(|m| d(m)).collect(),
            blobs: blobs.iter().map(|b| d(b)).collect(),
            missing: 0,
            platforms: 1,
        }
    }

    #[test]
    fn shared_content_stays_with_the_images_that_keep_it_and_pins_always_stay() {
        let catalog = vec![
            image("a", &["ma"], &["shared", "only-a"], 10),
            image("b", &["mb"], &["shared", "only-b"], 20),
            image("c", &["ma"], &["shared", "only-a"], 30), // a second tag of a's manifest
            image("p", &["mp"], &["only-p"], 5),
        ];
        let sizes: HashMap<Digest, u64> =
            ["ma", "mb", "mp", "shared", "only-a", "only-b", "only-p"].iter().map(|s| (d(s), 100)).collect();
        let pins = Pins { exact: HashSet::from(["quay.io/r:p".to_string()]), patterns: None };
        let by = |p: &str| Criteria { patterns: Some(Patterns::parse(p).unwrap()), ..Criteria::default() };

        let p = plan(&catalog, &sizes, &by(":a$"), &pins);
        assert_eq!(p.images.len(), 1);
        assert!(p.manifests.is_empty() && p.blobs.is_empty(), "tag c still uses everything of a");

        let p = plan(&catalog, &sizes, &by(":(a|c)$"), &pins);
        assert_eq!(p.manifests, vec![(d("ma"), 100)]);
        assert_eq!(p.blobs, vec![(d("only-a"), 100)], "b keeps the shared blob");
        assert_eq!(p.freed_by, vec![(0, 0), (1, 1)], "the last of a and c to go frees their content");
        assert_eq!(p.freed, 200);

        let p = plan(&catalog, &sizes, &by("quay"), &pins);
        assert_eq!((p.images.len(), p.pinned), (3, 1));
        assert!(!p.blobs.iter().any(|(b, _)| *b == d("only-p")), "a pinned image keeps its blobs");

        // 700 bytes cached; at most 450: the least recently pulled unpinned images go first.
        let fit = Criteria { max_size: Some(450), ..Criteria::default() };
        let p = plan(&catalog, &sizes, &fit, &pins);
        let names: Vec<String> = p.images.iter().map(Image::reference).collect();
        assert_eq!(names, vec!["quay.io/r:a", "quay.io/r:b", "quay.io/r:c"]);
        assert_eq!(p.total - p.freed, 200, "only the pinned image is left");
        let p = plan(&catalog, &sizes, &Criteria { max_size: Some(700), ..Criteria::default() }, &pins);
        assert!(p.images.is_empty(), "already small enough");
    }
}
