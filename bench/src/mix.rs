//! The realistic mix: what each benchmark transaction is, which API calls it makes
//! and which notifications, in which order, those calls must produce.
//!
//! The kind of a transaction is encoded in its tguid (`<prefix>-<hex>-<index>-<code>`), so a receiver
//! in another process can check per-transaction order from the bodies alone.

/// One benchmark transaction's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ENROLL → ENROLLED (60 %).
    Enroll,
    /// SEARCH → MATCH (7.5 %).
    SearchMatch,
    /// SEARCH → NOT_MATCH (7.5 %).
    SearchNoMatch,
    /// UPDATE → REVERSE_LATENT_MATCH → ENROLLED (15 %).
    Update,
    /// ENROLL → EXCEPTION → treatment (10 %, the four treatments ENROLL allows in turn).
    Exception(Treatment),
}

/// The treatments an ENROLL transaction allows (CONTRACT §2), and where each ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    SameFingers,
    DifferentFingers,
    MergeTransactions,
    Recollect,
}

impl Treatment {
    const ALL: [Treatment; 4] = [
        Treatment::SameFingers,
        Treatment::DifferentFingers,
        Treatment::MergeTransactions,
        Treatment::Recollect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Treatment::SameFingers => "SAME_FINGERS",
            Treatment::DifferentFingers => "DIFFERENT_FINGERS",
            Treatment::MergeTransactions => "MERGE_TRANSACTIONS",
            Treatment::Recollect => "RECOLLECT",
        }
    }

    /// The final state of an ENROLL transaction after this treatment.
    fn final_state(self) -> &'static str {
        match self {
            Treatment::SameFingers | Treatment::Recollect => "FAILED",
            Treatment::DifferentFingers | Treatment::MergeTransactions => "ENROLLED",
        }
    }
}

/// One REST call of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Register(&'static str),
    /// `POST …/events` with this `type`; REVERSE_LATENT_MATCH carries a uguid.
    Event(&'static str),
    Treatment(Treatment),
}

/// Twenty slots with exactly the mix's proportions (12 E, 3 S, 3 U, 2 X), interleaved so that
/// any window of the run has roughly the same mix.
const PATTERN: [u8; 20] = *b"EESEUEXEESEUEESEUEXE";

/// Most notifications one transaction of the mix produces.
pub const MAX_NOTIFICATIONS: usize = 3;

impl Kind {
    /// The kind of transaction number `i`: deterministic, so every run does the same work.
    pub fn for_index(i: u64) -> Kind {
        let round = i / 20;
        match PATTERN[(i % 20) as usize] {
            b'E' => Kind::Enroll,
            b'S' if (round + i).is_multiple_of(2) => Kind::SearchMatch,
            b'S' => Kind::SearchNoMatch,
            b'U' => Kind::Update,
            _ => Kind::Exception(Treatment::ALL[((round * 2 + i % 20 / 10) % 4) as usize]),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Kind::Enroll => "EN",
            Kind::SearchMatch => "SM",
            Kind::SearchNoMatch => "SN",
            Kind::Update => "UP",
            Kind::Exception(Treatment::SameFingers) => "XS",
            Kind::Exception(Treatment::DifferentFingers) => "XD",
            Kind::Exception(Treatment::MergeTransactions) => "XM",
            Kind::Exception(Treatment::Recollect) => "XR",
        }
    }

    pub fn from_code(code: &str) -> Option<Kind> {
        Some(match code {
            "EN" => Kind::Enroll,
            "SM" => Kind::SearchMatch,
            "SN" => Kind::SearchNoMatch,
            "UP" => Kind::Update,
            "XS" => Kind::Exception(Treatment::SameFingers),
            "XD" => Kind::Exception(Treatment::DifferentFingers),
            "XM" => Kind::Exception(Treatment::MergeTransactions),
            "XR" => Kind::Exception(Treatment::Recollect),
            _ => return None,
        })
    }

    /// The kind named by the last `-` segment of a benchmark tguid.
    pub fn of_tguid(tguid: &str) -> Option<Kind> {
        Kind::from_code(tguid.rsplit('-').next()?)
    }

    /// The calls, in order, each with how many notifications its commit records.
    pub fn calls(self) -> &'static [(Call, usize)] {
        match self {
            Kind::Enroll => &[(Call::Register("ENROLL"), 0), (Call::Event("ENROLLED"), 1)],
            Kind::SearchMatch => &[(Call::Register("SEARCH"), 0), (Call::Event("MATCH"), 1)],
            Kind::SearchNoMatch => &[(Call::Register("SEARCH"), 0), (Call::Event("NOT_MATCH"), 1)],
            Kind::Update => &[
                (Call::Register("UPDATE"), 0),
                (Call::Event("REVERSE_LATENT_MATCH"), 1),
                (Call::Event("ENROLLED"), 1),
            ],
            Kind::Exception(t) => match t {
                Treatment::SameFingers => &[
                    (Call::Register("ENROLL"), 0),
                    (Call::Event("EXCEPTION"), 1),
                    (Call::Treatment(Treatment::SameFingers), 2),
                ],
                Treatment::DifferentFingers => &[
                    (Call::Register("ENROLL"), 0),
                    (Call::Event("EXCEPTION"), 1),
                    (Call::Treatment(Treatment::DifferentFingers), 2),
                ],
                Treatment::MergeTransactions => &[
                    (Call::Register("ENROLL"), 0),
                    (Call::Event("EXCEPTION"), 1),
                    (Call::Treatment(Treatment::MergeTransactions), 2),
                ],
                Treatment::Recollect => &[
                    (Call::Register("ENROLL"), 0),
                    (Call::Event("EXCEPTION"), 1),
                    (Call::Treatment(Treatment::Recollect), 2),
                ],
            },
        }
    }

    /// The `status` of each notification the receiver must get, in order. (Unique within a
    /// transaction, which is what lets deliveries be matched to acks by tguid + status.)
    pub fn expected(self) -> &'static [&'static str] {
        match self {
            Kind::Enroll => &["ENROLLED"],
            Kind::SearchMatch => &["MATCH"],
            Kind::SearchNoMatch => &["NOT_MATCH"],
            Kind::Update => &["REVERSE_LATENT_MATCH", "ENROLLED"],
            Kind::Exception(t) if t.final_state() == "FAILED" => &["EXCEPTION", "OK", "FAILED"],
            Kind::Exception(_) => &["EXCEPTION", "OK", "ENROLLED"],
        }
    }
}

/// The tguid of transaction `i` of a phase: `<prefix>-<16 hex digits>-<index>-<kind>`.
///
/// GBDS tguids are UUIDs, which arrive in no order; the hex part (a bijective scramble of the
/// index) gives these the same spread, so every index the service keeps on tguids is written
/// at random places as in production, not appended to as consecutive numbers would be.
pub fn tguid(prefix: &str, i: u64) -> String {
    format!(
        "{prefix}-{:016x}-{i}-{}",
        scramble(i),
        Kind::for_index(i).code()
    )
}

/// A bijection on u64 with good mixing (the SplitMix64 finalizer).
fn scramble(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Calls and notifications that transactions `first..first + count` make.
pub fn totals(first: u64, count: u64) -> (u64, u64) {
    (first..first + count).fold((0, 0), |(calls, notes), i| {
        let k = Kind::for_index(i);
        (
            calls + k.calls().len() as u64,
            notes + k.expected().len() as u64,
        )
    })
}

/// The JSON body and path (after the base URL) of a call.
pub fn request(call: Call, tguid: &str) -> (String, String) {
    match call {
        Call::Register(op) => (
            "/v1/transactions".to_owned(),
            format!(r#"{{"tguid":"{tguid}","operation":"{op}"}}"#),
        ),
        Call::Event("REVERSE_LATENT_MATCH") => (
            format!("/v1/transactions/{tguid}/events"),
            format!(r#"{{"type":"REVERSE_LATENT_MATCH","uguid":"u-{tguid}"}}"#),
        ),
        Call::Event(kind) => (
            format!("/v1/transactions/{tguid}/events"),
            format!(r#"{{"type":"{kind}"}}"#),
        ),
        Call::Treatment(t) => (
            format!("/v1/transactions/{tguid}/treatment"),
            format!(r#"{{"treatment":"{}"}}"#, t.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_the_issues_proportions_in_every_twenty_transactions() {
        let kinds: Vec<Kind> = (40..60).map(Kind::for_index).collect();
        let count = |f: fn(&Kind) -> bool| kinds.iter().filter(|k| f(k)).count();
        assert_eq!(count(|k| *k == Kind::Enroll), 12);
        assert_eq!(
            count(|k| matches!(k, Kind::SearchMatch | Kind::SearchNoMatch)),
            3
        );
        assert_eq!(count(|k| *k == Kind::Update), 3);
        assert_eq!(count(|k| matches!(k, Kind::Exception(_))), 2);
    }

    #[test]
    fn every_treatment_and_both_search_outcomes_occur() {
        let kinds: Vec<Kind> = (0..200).map(Kind::for_index).collect();
        for t in Treatment::ALL {
            assert!(kinds.contains(&Kind::Exception(t)), "{t:?}");
        }
        assert!(kinds.contains(&Kind::SearchMatch) && kinds.contains(&Kind::SearchNoMatch));
    }

    #[test]
    fn each_call_records_as_many_notifications_as_are_expected() {
        for i in 0..40 {
            let k = Kind::for_index(i);
            let recorded: usize = k.calls().iter().map(|(_, n)| n).sum();
            assert_eq!(recorded, k.expected().len(), "{k:?}");
            assert_eq!(Kind::of_tguid(&tguid("b-x", i)), Some(k));
        }
    }

    #[test]
    fn twenty_transactions_make_45_calls_and_27_notifications() {
        assert_eq!(totals(0, 20), (45, 27));
    }
}
