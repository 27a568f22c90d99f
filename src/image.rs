//! Container image references: one parser, with the two rule sets Flotilla reproduces.
//!
//! - [`kustomize_split`]: kustomize's `image.Split`, which the `images:` transformer uses:
//!   (name, tag, digest), the name keeping its registry.
//! - [`ImageRef::parse`]: Karmada's `imageparser`, which its ImageOverrider uses: registry,
//!   repository, tag and digest, without Docker's `docker.io/library` normalisation.
//!
//! Both read `[registry/]path[:tag][@digest]` the same way but for two choices, which
//! [`split`] takes as arguments: where the path starts (a registry's `:port` is no tag) and
//! which `:` of the path starts the tag.

use std::fmt;

/// Which `:` of the path, before any digest, starts the tag.
#[derive(Debug, Clone, Copy)]
enum TagColon {
    /// kustomize: the first (`app:1.25:1.0` has the tag `1.25:1.0`).
    First,
    /// Karmada: the last (`app:1.25:1.0` has the tag `1.0`).
    Last,
}

/// Splits `image` into (name, tag, digest): past `path_start`, the first `@` starts the
/// digest, and the `:` that `colon` picks before it the tag. Absent parts are empty.
fn split(image: &str, path_start: usize, colon: TagColon) -> (&str, &str, &str) {
    let path = &image[path_start..];
    let (before_digest, digest) = match path.find('@') {
        Some(at) => (&image[..path_start + at], &path[at + 1..]),
        None => (image, ""),
    };
    let tagged = &before_digest[path_start..];
    let tag_start = match colon {
        TagColon::First => tagged.find(':'),
        TagColon::Last => tagged.rfind(':'),
    };
    match tag_start {
        Some(colon) => (
            &before_digest[..path_start + colon],
            &tagged[colon + 1..],
            digest,
        ),
        None => (before_digest, "", digest),
    }
}

/// kustomize's `image.Split`: (name, tag, digest). Past the first `/` (so a registry's port is
/// no tag), the first `@` starts the digest and the first `:` the tag:
/// `registry.local/nginx:1.25:1.0` has the tag `1.25:1.0`.
pub fn kustomize_split(image: &str) -> (&str, &str, &str) {
    let path_start = image.find('/').filter(|&slash| slash > 0).unwrap_or(0);
    split(image, path_start, TagColon::First)
}

/// A container image split by Karmada's rules, without `docker.io` normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), empty when the image names none.
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag, empty when none.
    pub tag: String,
    /// Digest (`sha256:...`), empty when none.
    pub digest: String,
}

impl ImageRef {
    /// Karmada's `imageparser.Parse`: the part before the first `/` is a registry only if it
    /// contains `.` or `:` or is `localhost`; past it, the first `@` starts the digest and the
    /// last `:` the tag.
    pub fn parse(image: &str) -> Self {
        let registry = match image.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first
            }
            _ => "",
        };
        let path_start = if registry.is_empty() {
            0
        } else {
            registry.len() + 1
        };
        let (name, tag, digest) = split(image, path_start, TagColon::Last);
        ImageRef {
            registry: registry.to_string(),
            repository: name[path_start..].to_string(),
            tag: tag.to_string(),
            digest: digest.to_string(),
        }
    }

    /// The tag, or the digest when there is one (Karmada's `TagOrDigest`).
    pub fn tag_or_digest(&self) -> String {
        if self.digest.is_empty() {
            self.tag.clone()
        } else {
            self.digest.clone()
        }
    }

    /// Sets a tag, or a digest when the value looks like one (`algorithm:hex`).
    pub fn set_tag_or_digest(&mut self, value: &str) {
        if looks_like_digest(value) {
            self.digest = value.to_string();
            self.tag.clear();
        } else {
            self.tag = value.to_string();
            self.digest.clear();
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.registry.is_empty() {
            write!(f, "{}/", self.registry)?;
        }
        write!(f, "{}", self.repository)?;
        if !self.digest.is_empty() {
            write!(f, "@{}", self.digest)
        } else if !self.tag.is_empty() {
            write!(f, ":{}", self.tag)
        } else {
            Ok(())
        }
    }
}

/// Whether a value is a digest (`algorithm:hex`, at least 32 hex digits) rather than a tag.
fn looks_like_digest(value: &str) -> bool {
    value.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
            && hex.len() >= 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomize_rules_split_as_kustomize_image_split() {
        // kustomize's api/image tests (Split), with the tag and digest without their `:`/`@`.
        assert_eq!(kustomize_split("nginx"), ("nginx", "", ""));
        assert_eq!(kustomize_split("nginx:1.2.3"), ("nginx", "1.2.3", ""));
        assert_eq!(kustomize_split("nginx@12345"), ("nginx", "", "12345"));
        assert_eq!(
            kustomize_split("foo.io/example/hello:v1.0"),
            ("foo.io/example/hello", "v1.0", "")
        );
        assert_eq!(
            kustomize_split("hello@sha256:25a0d4"),
            ("hello", "", "sha256:25a0d4")
        );
        // Registries with ports, digests with tags.
        assert_eq!(kustomize_split("nginx:1.2"), ("nginx", "1.2", ""));
        assert_eq!(
            kustomize_split("localhost:5000/app:1.0"),
            ("localhost:5000/app", "1.0", "")
        );
        assert_eq!(
            kustomize_split("localhost:5000/app"),
            ("localhost:5000/app", "", "")
        );
        assert_eq!(
            kustomize_split("a.io/app@sha256:abc"),
            ("a.io/app", "", "sha256:abc")
        );
        assert_eq!(
            kustomize_split("localhost:5000/app:1.0@sha256:abc"),
            ("localhost:5000/app", "1.0", "sha256:abc")
        );
        // The first `:` past the first `/` starts the tag; the first `@` the digest.
        assert_eq!(
            kustomize_split("registry.local/nginx:1.25:1.0"),
            ("registry.local/nginx", "1.25:1.0", "")
        );
        assert_eq!(kustomize_split("app@sha256:a:b"), ("app", "", "sha256:a:b"));
    }

    const DIGEST: &str = "sha256:50d858e0985ecc7f60418aaf0cc5ab587f42c2570a884095a9e8ccacd0f6545c";

    #[test]
    fn karmada_rules_parse_as_karmada_imageparser() {
        // Karmada's pkg/util/imageparser tests (Parse and SplitHostname): image, registry,
        // repository, tag, digest.
        let with_digest = format!("fictional.registry.example:10443/subpath/imagename@{DIGEST}");
        let cases = [
            ("pause", "", "pause", "", ""),
            (
                "subpath/imagename:v1.0.0",
                "",
                "subpath/imagename",
                "v1.0.0",
                "",
            ),
            (
                "fictional.registry.example/imagename:v1.0.0",
                "fictional.registry.example",
                "imagename",
                "v1.0.0",
                "",
            ),
            (
                "fictional.registry.example:10443/subpath/imagename:v1.0.0",
                "fictional.registry.example:10443",
                "subpath/imagename",
                "v1.0.0",
                "",
            ),
            (
                &with_digest,
                "fictional.registry.example:10443",
                "subpath/imagename",
                "",
                DIGEST,
            ),
            ("", "", "", "", ""),
            (
                "fictional.registry.example/subpath/imagename",
                "fictional.registry.example",
                "subpath/imagename",
                "",
                "",
            ),
            (
                "10.10.10.10:10443/subpath/imagename",
                "10.10.10.10:10443",
                "subpath/imagename",
                "",
                "",
            ),
        ];
        for (image, registry, repository, tag, digest) in cases {
            let parsed = ImageRef::parse(image);
            assert_eq!(parsed.to_string(), image, "round trip");
            let parts = (
                parsed.registry.as_str(),
                parsed.repository.as_str(),
                parsed.tag.as_str(),
                parsed.digest.as_str(),
            );
            assert_eq!(parts, (registry, repository, tag, digest), "{image}");
        }
    }

    #[test]
    fn karmada_tag_or_digest_as_karmada_components() {
        // Karmada's Components examples: set a tag, remove it, set a digest.
        let mut image = ImageRef::parse("gcr.io/kube-apiserver");
        image.set_tag_or_digest("v1.19.0");
        assert_eq!(image.to_string(), "gcr.io/kube-apiserver:v1.19.0");
        assert_eq!(image.tag_or_digest(), "v1.19.0");
        image.set_tag_or_digest(DIGEST);
        assert_eq!(image.to_string(), format!("gcr.io/kube-apiserver@{DIGEST}"));
        assert_eq!(image.tag_or_digest(), DIGEST);
    }

    #[test]
    fn the_rule_sets_differ_where_kustomize_and_karmada_do() {
        // kustomize takes the first `:` for the tag, Karmada the last.
        assert_eq!(kustomize_split("a.io/app:1:2").1, "1:2");
        assert_eq!(ImageRef::parse("a.io/app:1:2").tag, "2");
        // kustomize keeps the registry in the name; Karmada's needs a `.`, `:` or localhost.
        assert_eq!(kustomize_split("team/app:1").0, "team/app");
        assert_eq!(ImageRef::parse("localhost/app").registry, "localhost");
        assert_eq!(ImageRef::parse("team/app").registry, "");
    }
}
