//! Which images an export takes: the cached images matching `--pattern` (as
//! `list` matches them), or the references of `--image-file` lists (as `load`
//! reads them: by tag or by digest); then, for each, the referrers-tag
//! artifacts cached in its repository: cosign's `<alg>-<hex>.sig`, `.att` and
//! `.sbom` tags and the OCI referrers fallback tag `<alg>-<hex>`, for its
//! manifest and its cached platform manifests.

use std::collections::HashMap;

use crate::config::patterns::Patterns;
use crate::oci::Digest;
use crate::ops::load::Input;
use crate::store::catalog::ImageName;
use crate::store::peek::Peeked;
use crate::store::Kind;

/// Suffixes of the referrers tags taken along (after `<alg>-<hex>`).
const REFERRER_SUFFIXES: [&str; 4] = [".sig", ".att", ".sbom", ""];

/// One image to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// `registry/repo`
    pub repository: String,
    /// The tag it is exported under; `None`: by digest.
    pub tag: Option<String>,
    pub digest: Digest,
    /// For a referrers-tag artifact, the name of the image it was taken along for.
    pub referrer_of: Option<String>,
}

impl Chosen {
    /// The full reference it is exported under: `registry/repo:tag` or `registry/repo@digest`.
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.repository),
            None => format!("{}@{}", self.repository, self.digest),
        }
    }
}

/// The images chosen, and the references that name nothing cached (with why).
#[derive(Debug, Default)]
pub struct Selection {
    pub chosen: Vec<Chosen>,
    pub refused: Vec<(String, String)>,
}

impl Selection {
    fn push(&mut self, chosen: Chosen) {
        if !self.chosen.iter().any(|c| c.name() == chosen.name()) {
            self.chosen.push(chosen);
        }
    }
}

/// The cached images any pattern matches.
pub fn by_patterns(peeked: &Peeked, patterns: &Patterns) -> Selection {
    let mut selection = Selection::default();
    for image in peeked.images.iter().filter(|i| patterns.matches_any(&i.references())) {
        let tag = match &image.name {
            ImageName::Tag(k) => Some(k.tag.as_str().to_string()),
            ImageName::Digest { .. } => None,
        };
        selection.push(Chosen { repository: image.repository(), tag, digest: image.digest.clone(), referrer_of: None });
    }
    selection
}

/// The images image lists name. A line that is not a reference, or names
/// nothing cached, is refused by name; a tarball among the files is an error.
pub fn by_lists(peeked: &Peeked, inputs: Vec<Input>) -> Result<Selection, String> {
    let tags = tag_map(peeked);
    let mut selection = Selection::default();
    for input in inputs {
        let lines = match input {
            Input::List { lines, .. } => lines,
            Input::Tarball { path, .. } => {
                return Err(format!("--image-file: {} is a tarball, not an image list", path.display()))
            }
        };
        for line in lines {
            let label = format!("{} ({})", line.text, line.origin);
            let image = match line.image {
                Ok(i) => i,
                Err(e) => {
                    selection.refused.push((label, e));
                    continue;
                }
            };
            let repository = format!("{}/{}", image.registry, image.repo);
            let tagged = image.tag.as_ref().and_then(|t| tags.get(&format!("{repository}:{t}")));
            let digest = match (&image.digest, tagged) {
                (Some(d), _) => d.clone(),
                (None, Some(d)) => (*d).clone(),
                (None, None) => {
                    selection.refused.push((label, format!("{image} is not cached (no tag record)")));
                    continue;
                }
            };
            if !peeked.records.get(&digest).is_some_and(|r| r.kind == Kind::Manifest) {
                selection.refused.push((label, format!("manifest {digest} of {repository} is not cached")));
                continue;
            }
            // Named by its tag only when the cached tag names this digest.
            let tag = image.tag.filter(|_| tagged == Some(&&digest)).map(|t| t.as_str().to_string());
            selection.push(Chosen { repository, tag, digest, referrer_of: None });
        }
    }
    Ok(selection)
}

/// Adds the cached referrers-tag artifacts of every chosen image.
pub fn add_referrers(peeked: &Peeked, selection: &mut Selection) {
    let tags = tag_map(peeked);
    let mut found = Vec::new();
    for chosen in &selection.chosen {
        let mut digests = vec![&chosen.digest];
        if let Some(image) = peeked.images.iter().find(|i| i.digest == chosen.digest) {
            digests.extend(image.manifests.iter().filter(|d| **d != chosen.digest));
        }
        for digest in digests {
            for suffix in REFERRER_SUFFIXES {
                let tag = format!("{}-{}{suffix}", digest.algorithm().as_str(), digest.hex());
                if let Some(target) = tags.get(&format!("{}:{tag}", chosen.repository)) {
                    found.push(Chosen {
                        repository: chosen.repository.clone(),
                        tag: Some(tag),
                        digest: (*target).clone(),
                        referrer_of: Some(chosen.name()),
                    });
                }
            }
        }
    }
    for chosen in found {
        selection.push(chosen);
    }
}

/// `registry/repo:tag` → digest, for tags whose manifest is committed.
fn tag_map(peeked: &Peeked) -> HashMap<String, &Digest> {
    peeked
        .tags
        .iter()
        .filter(|(_, t)| peeked.records.get(&t.digest).is_some_and(|r| r.kind == Kind::Manifest))
        .map(|(k, t)| (format!("{}/{}:{}", k.registry, k.repo, k.tag), &t.digest))
        .collect()
}
