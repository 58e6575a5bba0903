//! Error messages with their causes: `tracing`'s `%e` prints only the top message of an error
//! whose cause sits in `#[source]`, so a log line said "routes: failed to apply" and not why.

use std::error::Error;

/// `e`'s message followed by each of its sources' messages, joined with `": "`. A source whose
/// message the text already contains (an error that also prints its cause, as `#[error("...:
/// {0}")]` with `#[from]` does) is not repeated.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("no such device")]
    struct Root;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read kilo0")]
    struct Middle(#[source] Root);

    #[derive(Debug, thiserror::Error)]
    enum Top {
        #[error("failed to apply the plan")]
        Apply(#[source] Middle),
        #[error("wireguard: {0}")]
        Printed(#[from] Middle),
    }

    #[test]
    fn every_cause_is_joined_after_the_message() {
        assert_eq!(
            chain(&Top::Apply(Middle(Root))),
            "failed to apply the plan: cannot read kilo0: no such device"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(
            chain(&Top::Printed(Middle(Root))),
            "wireguard: cannot read kilo0: no such device"
        );
    }

    #[test]
    fn an_error_without_a_source_is_its_message() {
        assert_eq!(chain(&Root), "no such device");
        let io = std::io::Error::other("boom");
        assert_eq!(chain(&io), "boom");
    }
}
