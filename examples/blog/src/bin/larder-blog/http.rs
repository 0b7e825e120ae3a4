//! The blocking HTTP client `check-pages` and `probe-coherence` read the
//! server with: no redirects followed (a comment's 303 names its id), and
//! every status returned as a response, not an error.

use std::time::Duration;

/// A client whose requests give up after `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// GETs `url`: its status and body.
pub(crate) fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String), ureq::Error> {
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}
