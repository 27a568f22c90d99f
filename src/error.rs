//! What every error type here shares: how an error and its causes read on one line.
//!
//! Errors keep their context in their message and the error they wrap in `source()` (see
//! STYLE.md's errors section); `/status`, Events, logs and the CLI show the whole chain.

use std::error::Error;

/// An error and its causes, outermost first, joined by `: `. A cause whose text the chain
/// already ends with (kube's and hyper's errors quote their cause) is not repeated.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: String,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(message: &str, cause: Option<Layer>) -> Layer {
        Layer {
            message: message.into(),
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn causes_follow_their_error_once_each() {
        let refused = layer("connection refused", None);
        let quoting = layer("tcp connect error: connection refused", Some(refused));
        let outer = layer("cluster a", Some(quoting));
        assert_eq!(
            chain(&outer),
            "cluster a: tcp connect error: connection refused"
        );
        let plain = layer("fieldOverrider[0]", Some(layer("0", None)));
        assert_eq!(
            chain(&plain),
            "fieldOverrider[0]: 0",
            "only a quoted ending is dropped"
        );
    }
}
