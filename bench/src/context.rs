//! What every run of an invocation shares: where deliveries are observed (`Observer`), the
//! invocation's context, and the size and pacing of the measured load.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::args::{BenchArgs, RateUnit};
use crate::driver::Load;
use crate::mix;
use crate::receiver::{self, Receiver, Snapshot};

/// Where deliveries are observed.
pub(crate) enum Observer {
    Local(Receiver),
    /// A receiver in another process, read over HTTP.
    Remote(String),
}

impl Observer {
    pub fn url(&self) -> String {
        match self {
            Observer::Local(r) => r.url(),
            Observer::Remote(u) => u.clone(),
        }
    }

    pub async fn snapshot(
        &self,
        client: &reqwest::Client,
        prefix: Option<&str>,
    ) -> anyhow::Result<Snapshot> {
        match self {
            Observer::Local(r) => Ok(r.shared.snapshot(prefix)),
            Observer::Remote(u) => receiver::fetch(client, u, prefix).await,
        }
    }

    pub async fn unique(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        match self {
            Observer::Local(r) => Ok(r.shared.unique()),
            Observer::Remote(_) => Ok(self.snapshot(client, None).await?.unique),
        }
    }

    /// Waits until `count` distinct notifications have arrived, or `timeout` passed.
    pub async fn wait_for(
        &self,
        client: &reqwest::Client,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        let pause = match self {
            Observer::Local(_) => Duration::from_millis(2),
            Observer::Remote(_) => Duration::from_millis(50),
        };
        loop {
            if self.unique(client).await? >= count {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// What every run of an invocation shares.
pub(crate) struct Context {
    pub args: BenchArgs,
    /// For what is not the load: health checks, the receiver's records (the load goes
    /// through `driver`'s own connections).
    pub client: reqwest::Client,
    pub dir: PathBuf,
    /// Distinguishes this invocation's tguids from any other's in the same database.
    pub run_id: String,
}

pub(crate) fn load_label(args: &BenchArgs) -> String {
    match args.rate {
        Some(r) => format!(
            "open loop {r} {}/s for {:?}",
            match args.rate_unit {
                RateUnit::Notifications => "notifications",
                RateUnit::Calls => "calls",
            },
            args.duration
        ),
        None => format!("closed loop c={}", args.concurrency),
    }
}

/// The measured phase's size and pacing.
pub(crate) fn measured_load(args: &BenchArgs) -> (u64, Load) {
    match args.rate {
        None => (
            args.transactions,
            Load::Closed {
                concurrency: args.concurrency,
            },
        ),
        Some(rate) => {
            // Per transaction of the mix: 2.25 calls, 1.35 notifications.
            let (calls, notes) = mix::totals(0, 20);
            let per_tx = match args.rate_unit {
                RateUnit::Notifications => notes as f64 / 20.0,
                RateUnit::Calls => calls as f64 / 20.0,
            };
            let per_s = rate / per_tx;
            let count = (per_s * args.duration.as_secs_f64()).round().max(1.0) as u64;
            (count, Load::Open { per_s })
        }
    }
}
