//! Every limit Flotilla puts on what it reads and serves, in one place, with its default.
//!
//! A fleet repo comes from Git and webhook requests from the network: neither may make the
//! agent use unbounded memory, time or file descriptors. Each limit has a command-line flag
//! (see `flotilla render --help` and `flotilla run --help`) and hitting one is an error that
//! names the limit, where it was hit and the flag that raises it, never a crash.

use std::time::Duration;

/// Every limit of `flotilla run`: those of each commit's render and of its HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Limits of each render.
    pub render: RenderLimits,
    /// Limits of the HTTP server.
    pub server: ServerLimits,
}

/// Limits of one render (`render`, `plan`, `diff`, `sync`, and each commit `run` renders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// Objects one render may load, counting every file read, helm chart and generator
    /// output (a base shared by two overlays counts twice: it is built twice).
    /// Flag `--max-objects`.
    pub max_objects: usize,
    /// Directories nested below the fleet path, and kustomizations nested through bases and
    /// components. Flag `--max-depth`.
    pub max_depth: usize,
    /// Bytes of one file (resources, patches, generator files, values files).
    /// Flag `--max-file-size`.
    pub max_file_size: u64,
    /// Bytes read from the repository by one render, all files together.
    /// Flag `--max-render-size`.
    pub max_render_size: u64,
    /// Copies of objects one plan may hold, counted once per cluster each goes to.
    /// Flag `--max-placed-objects`.
    pub max_placed_objects: usize,
}

/// Nesting deeper than this is refused even when asked for: each level is a stack frame of
/// the render, which the agent runs on a 2 MiB thread.
pub const MAX_DEPTH_CEILING: usize = 128;

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            // 200,000 documents took 1.3 GiB (6-7 KiB an object); 20,000 stays well under the
            // agent's 256 MiB Deployment limit when placed on one cluster, and far above real
            // fleets. Placement multiplies by the clusters an object goes to.
            max_objects: 20_000,
            max_depth: crate::render::MAX_DEPTH,
            // The largest real CRDs are under 1 MiB.
            max_file_size: 8 * 1024 * 1024,
            max_render_size: 256 * 1024 * 1024,
            // A million small ConfigMaps placed took 2.5 GiB (an unoptimised build); 200,000
            // copies is 20,000 objects on 10 clusters, or 40 objects on 5,000.
            max_placed_objects: 200_000,
        }
    }
}

/// Limits of the agent's HTTP server (`flotilla run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest webhook body; a larger `Content-Length` is refused (413) before anything is
    /// read, and a chunked body is cut off there. Flag `--max-body`.
    pub max_body: usize,
    /// Webhook requests served at once; more are answered 503 before their body is read.
    /// Flag `--max-concurrent-requests`.
    pub max_concurrent_requests: usize,
    /// A request's headers must arrive within this, also those of the next request on a
    /// keep-alive connection (hyper waits for them): an idle connection is closed after it.
    /// Flag `--header-timeout`.
    pub header_timeout: Duration,
    /// A webhook request, body upload included, must be done within this (408 otherwise).
    /// Flag `--body-timeout`.
    pub body_timeout: Duration,
    /// A connection's whole life: it is closed after this long however busy, so no client
    /// holds one for ever by trickling requests. Flag `--idle-timeout`.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed as they arrive. Flag `--max-connections`.
    pub max_connections: usize,
    /// Webhook deliveries remembered for de-duplication (32 bytes each).
    /// Flag `--dedupe-entries`.
    pub dedupe_entries: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            // GitHub's push payloads stay well below 5 MiB (GitHub caps them at 25 MB).
            max_body: 5 * 1024 * 1024,
            max_concurrent_requests: 4,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            dedupe_entries: 1024,
        }
    }
}

/// Parses a size: bytes (`1048576`) or with a binary unit (`512KiB`, `8MiB`, `1GiB`; `K`,
/// `M`, `G` and `KB`, `MB`, `GB` mean the same). More than zero.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let invalid = |problem| SizeError {
        text: text.to_string(),
        problem,
    };
    let (number, unit) = number_and_unit(text).ok_or_else(|| invalid(SizeProblem::NotANumber))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(invalid(SizeProblem::UnknownUnit)),
    };
    let size = number
        .checked_mul(scale)
        .ok_or_else(|| invalid(SizeProblem::TooLarge))?;
    if size == 0 {
        return Err(invalid(SizeProblem::Zero));
    }
    Ok(size)
}

/// A size [`parse_size`] does not read, as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {problem}")]
pub struct SizeError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub problem: SizeProblem,
}

/// What is wrong with a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeProblem {
    /// No leading number, or one that does not fit.
    #[error("expected a number of bytes, e.g. 8MiB or 1048576")]
    NotANumber,
    /// A unit other than B, KiB, MiB or GiB (or their short forms).
    #[error("the unit must be B, KiB, MiB or GiB")]
    UnknownUnit,
    /// More bytes than fit in 64 bits.
    #[error("too large")]
    TooLarge,
    /// Zero bytes: no limit can be zero.
    #[error("must be more than zero")]
    Zero,
}

/// Value parsers whose own errors are still text (`run --max-body`) use `?` on
/// [`parse_size`]; the text is the message a user reads.
/// Splits `30s` or `8MiB` into its leading number and the unit after it; `None` without a
/// number or when it overflows.
pub(crate) fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Shows a size as [`parse_size`] reads it, in the largest unit that divides it.
pub fn show_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_refuse_zero_and_overflow() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(show_size(8 << 20), "8MiB");
        assert_eq!(show_size(1000), "1000B");
        assert_eq!(parse_size(&show_size(1536)), Ok(1536));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let render = RenderLimits::default();
        assert_eq!(render.max_objects, 20_000);
        assert_eq!(render.max_depth, 64);
        assert_eq!(render.max_file_size, 8 << 20);
        assert!(render.max_depth <= MAX_DEPTH_CEILING);
        let server = ServerLimits::default();
        assert_eq!(server.max_body, 5 << 20);
        assert_eq!(server.max_concurrent_requests, 4);
        assert_eq!(server.header_timeout, Duration::from_secs(10));
    }
}
