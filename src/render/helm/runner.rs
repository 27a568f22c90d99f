//! Running helm: which binary, with what environment, for how long and how much output
//! (a private home, a clean environment, a timeout, capped pipes), and the arguments kustomize
//! gives `helm template` and `helm pull`.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HelmChart;

/// Why running helm failed. Each names the command as it was run (the binary and arguments).
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The binary could not be started.
    #[error("cannot run helm {program:?} (install helm v3 or set {HELM_ENV} to its path)")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// Helm ran past [`HelmRunner::timeout`] and was killed.
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout.
        seconds: u64,
    },
    /// Waiting for helm failed.
    #[error("waiting for `{command}`")]
    Wait {
        /// The command line.
        command: String,
        /// Why waiting failed.
        #[source]
        source: std::io::Error,
    },
    /// Helm wrote more than [`HelmRunner::max_output`].
    #[error("`{command}` wrote more than {limit} bytes")]
    TooMuchOutput {
        /// The command line.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// Helm exited with a failure; `stderr` is what it said (capped).
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its error output, trimmed.
        stderr: String,
    },
    /// The binary is not helm v3.
    #[error("helm {program:?} reports version {reported:?}; kustomize's helmCharts need helm v3")]
    NotVersion3 {
        /// The binary.
        program: PathBuf,
        /// What `helm version` printed, trimmed.
        reported: String,
    },
}

/// The environment variable naming the helm binary.
pub const HELM_ENV: &str = "FLOTILLA_HELM";

/// How long one helm run may take before it is killed.
const HELM_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest `helm template` output read (charts with big CRDs render a few MiB).
const MAX_HELM_OUTPUT: usize = 64 * 1024 * 1024;

/// Largest helm error output kept for a message.
const MAX_HELM_STDERR: usize = 64 * 1024;
/// The only variables of Flotilla's environment helm sees (for finding programs and proxies).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];
/// How a helm binary is run: which one, for how long, how much output is read.
#[derive(Debug, Clone)]
pub struct HelmRunner {
    /// The helm binary.
    pub program: PathBuf,
    /// Kill helm after this long.
    pub timeout: Duration,
    /// Refuse more stdout than this.
    pub max_output: usize,
}

impl HelmRunner {
    /// The runner from `FLOTILLA_HELM`, else `helm` on `PATH`, with the default limits.
    pub fn from_env() -> Self {
        let program = std::env::var_os(HELM_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("helm"));
        HelmRunner {
            program,
            timeout: HELM_TIMEOUT,
            max_output: MAX_HELM_OUTPUT,
        }
    }

    /// Runs helm with `args`, its homes below `home` (kustomize's HELM_CONFIG_HOME, and
    /// HELM_CACHE_HOME / HELM_DATA_HOME below it); returns stdout, or why it failed.
    pub(super) fn run(&self, args: &[OsString], home: &Path) -> Result<Vec<u8>, HelmError> {
        let described = || {
            let mut line = self.program.display().to_string();
            for arg in args {
                line.push(' ');
                line.push_str(&arg.to_string_lossy());
            }
            line
        };
        let mut command = Command::new(&self.program);
        // A clean environment: HELM_NAMESPACE, a kubeconfig context or a pod's service account
        // would otherwise change `.Release.Namespace`, so the hub and a laptop would differ.
        command.env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let mut child = command
            .args(args)
            .env("KUBECONFIG", home.join("no-kubeconfig"))
            .env("HELM_CONFIG_HOME", home)
            .env("HELM_CACHE_HOME", home.join(".cache"))
            .env("HELM_DATA_HOME", home.join(".data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HelmError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        // Readers stop at their cap and close the pipe, so a flood cannot fill memory.
        let stdout = child.stdout.take().map(|pipe| {
            let cap = self.max_output;
            std::thread::spawn(move || read_capped(pipe, cap))
        });
        let stderr = child
            .stderr
            .take()
            .map(|pipe| std::thread::spawn(move || read_capped(pipe, MAX_HELM_STDERR)));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HelmError::TimedOut {
                        command: described(),
                        seconds: self.timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(source) => {
                    let _ = child.kill();
                    return Err(HelmError::Wait {
                        command: described(),
                        source,
                    });
                }
            }
        };
        let stdout = stdout
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let stderr = stderr
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        if stdout.len() > self.max_output {
            return Err(HelmError::TooMuchOutput {
                command: described(),
                limit: self.max_output,
            });
        }
        if !status.success() {
            return Err(HelmError::Failed {
                command: described(),
                status,
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        Ok(stdout)
    }

    /// kustomize's `checkHelmVersion`: only helm v3 is accepted.
    pub(super) fn check_version(&self, home: &Path) -> Result<(), HelmError> {
        let output = self.run(&["version".into(), "-c".into(), "--short".into()], home)?;
        let text = String::from_utf8_lossy(&output);
        match version_major(&text) {
            Some("3") => Ok(()),
            _ => Err(HelmError::NotVersion3 {
                program: self.program.clone(),
                reported: text.trim().to_string(),
            }),
        }
    }
}

/// The major version of the first `N.N...` in `text` (kustomize's `v?\d+(\.\d+)+`).
fn version_major(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .find(|token| {
            let mut parts = token.split('.');
            parts.next().is_some_and(|p| !p.is_empty())
                && parts.next().is_some_and(|p| !p.is_empty())
        })
        .and_then(|token| token.split('.').next())
}

/// Reads at most `cap + 1` bytes (one more tells that the cap was passed), then drops the pipe.
fn read_capped(pipe: impl Read, cap: usize) -> Vec<u8> {
    let mut buffer = Vec::new();
    let _ = pipe
        .take(u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut buffer);
    buffer
}
/// kustomize's `HelmChart.AsHelmArgs`, with the values file it wrote.
pub(super) fn template_args(
    chart: &HelmChart,
    chart_dir: &Path,
    values_file: &Path,
    additional_values: &[PathBuf],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["template".into()];
    if chart.release_name.is_empty() {
        args.push("--generate-name".into());
    } else {
        args.push(chart.release_name.clone().into());
    }
    args.push(chart_dir.into());
    let mut flag = |name: &str, value: &str| {
        args.push(name.into());
        args.push(value.into());
    };
    if !chart.namespace.is_empty() {
        flag("--namespace", &chart.namespace);
    }
    if !chart.name_template.is_empty() {
        flag("--name-template", &chart.name_template);
    }
    args.push("-f".into());
    args.push(values_file.into());
    for path in additional_values {
        args.push("-f".into());
        args.push(path.into());
    }
    for api_version in &chart.api_versions {
        args.push("--api-versions".into());
        args.push(api_version.into());
    }
    if !chart.kube_version.is_empty() {
        args.push("--kube-version".into());
        args.push(chart.kube_version.clone().into());
    }
    for (set, name) in [
        (chart.include_crds, "--include-crds"),
        (chart.skip_tests, "--skip-tests"),
        (chart.skip_hooks, "--no-hooks"),
        (chart.debug, "--debug"),
    ] {
        if set {
            args.push(name.into());
        }
    }
    args
}

/// kustomize's `pullCommand`.
pub(super) fn pull_args(chart: &HelmChart, into: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["pull".into(), "--untar".into(), "--untardir".into()];
    args.push(into.into());
    if chart.repo.starts_with("oci://") {
        args.push(format!("{}/{}", chart.repo.trim_end_matches('/'), chart.name).into());
    } else {
        args.push("--repo".into());
        args.push(chart.repo.clone().into());
        args.push(chart.name.clone().into());
    }
    if !chart.version.is_empty() {
        args.push("--version".into());
        args.push(chart.version.clone().into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_versions_are_read_like_kustomize() {
        assert_eq!(version_major("v3.22.0+g1234567\n"), Some("3"));
        assert_eq!(version_major("Client: v2.17.0+ga690bad"), Some("2"));
        assert_eq!(version_major("4.0.0"), Some("4"));
        assert_eq!(version_major("helm v3"), None);
    }
}
