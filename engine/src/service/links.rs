//! The URLs the engine hands out: absolute, on a base the API takes from `public_url` or the
//! request (see `api::links`), and signed for the one run they open. The runner builds the
//! links of a callback with the same functions, on the base its trigger was made on.

use jobdock_types::Run;

use crate::crypto::KeyRing;

/// How long a signed link opens its run. Data Factory follows a 202's `Location` for up to
/// seven days.
const LINK_TTL_SECONDS: i64 = 7 * 86_400;

/// The base of every URL of one answer, e.g. `https://jobdock.example.com`.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl BaseUrl {
    /// The absolute, signed URL of `tail` under the run (`""`, `"/logs"`, `"/outcome"`).
    pub fn signed(&self, keys: &KeyRing, run_id: &str, tail: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        // Rounded up to the hour, so that the links of a run read twice are the same.
        let expires_at = (now + LINK_TTL_SECONDS + 3599) / 3600 * 3600;
        let sig = keys.sign_link(run_id, expires_at);
        format!(
            "{}/api/v1/runs/{run_id}{tail}?exp={expires_at}&sig={sig}",
            self.0
        )
    }

    /// The run with its absolute, signed `logs_url`.
    pub fn run(&self, keys: &KeyRing, mut run: Run) -> Run {
        run.logs_url = Some(self.signed(keys, &run.id, "/logs"));
        run
    }

    /// Where the outcome of a run is polled.
    pub fn outcome(&self, keys: &KeyRing, run_id: &str) -> String {
        self.signed(keys, run_id, "/outcome")
    }
}
