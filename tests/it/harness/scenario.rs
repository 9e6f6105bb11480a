//! The flows of the GBDS notification document, as `fixtures/scenarios/*.json` writes them
//! (see `fixtures/README.md`): a registration, the calls that follow, and the bodies a
//! receiver must get, in order.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::Api;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub document_section: String,
    #[serde(default)]
    pub note: Option<String>,
    pub operation: String,
    /// Settings merged over the test configuration, as a JSON image of the TOML tables.
    #[serde(default)]
    pub config: Option<Value>,
    pub steps: Vec<Step>,
    /// The bodies, with `<tguid>` where the transaction's tguid goes.
    pub expect: Vec<String>,
    pub final_state: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub call: Call,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    Event,
    Review,
    Treatment,
}

impl Scenario {
    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios")
    }

    /// The scenario in `fixtures/scenarios/{name}.json`.
    pub fn named(name: &str) -> Scenario {
        let path = Self::dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let scenario: Scenario = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not fit fixtures/README.md: {e}", path.display()));
        assert_eq!(
            scenario.name,
            name,
            "{}: name differs from the file name",
            path.display()
        );
        scenario
    }

    /// Every scenario file, by name.
    pub fn all() -> Vec<Scenario> {
        let mut out: Vec<Scenario> = Self::names().iter().map(|n| Self::named(n)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(
            out.len() >= 20,
            "only {} scenarios in fixtures/scenarios",
            out.len()
        );
        out
    }

    /// The names of the scenario files.
    pub fn names() -> Vec<String> {
        let dir = Self::dir();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                p.file_stem()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// `[notifications] update_operation` of its config ("ENROLL" when it has none).
    pub fn update_operation(&self) -> String {
        self.config
            .as_ref()
            .and_then(|c| c["notifications"]["update_operation"].as_str())
            .unwrap_or("ENROLL")
            .to_owned()
    }

    /// Its config as TOML text, to merge over the test configuration.
    pub fn config_toml(&self) -> String {
        match &self.config {
            None => String::new(),
            Some(v) => {
                let table: toml::Table = toml::Table::try_from(v)
                    .unwrap_or_else(|e| panic!("fixture config is not a table of settings: {e}"));
                toml::to_string(&table).expect("a TOML table serializes")
            }
        }
    }

    /// The expected bodies with the tguid filled in.
    pub fn expected(&self, tguid: &str) -> Vec<String> {
        self.expect
            .iter()
            .map(|e| e.replace("<tguid>", tguid))
            .collect()
    }

    /// Registers the transaction and runs every step; each must be accepted.
    pub async fn run(&self, api: &Api, tguid: &str) {
        api.register(tguid, &self.operation).await.ok(201);
        for step in &self.steps {
            step.send(api, tguid).await.ok(200);
        }
    }
}

impl Step {
    /// Makes the step's call on `tguid`; returns the answer unchecked.
    pub async fn send(&self, api: &Api, tguid: &str) -> super::Answer {
        match self.call {
            Call::Event => api.event(tguid, self.body.clone()).await,
            Call::Review => api.review(tguid, self.body.clone()).await,
            Call::Treatment => api.treatment(tguid, self.body.clone()).await,
        }
    }
}
