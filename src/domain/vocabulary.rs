//! The contract's vocabulary: operations, states, back-office outcomes, review decisions,
//! treatments and the UPDATE label, each with its wire name (`as_str`/`parse`) and the list of
//! every value (`ALL`), from one table per enum. The machine and the notification bodies
//! both speak it.

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in the order of the contract's tables.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value with that wire name, if there is one.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What the back office asked GBDS to do.
    Operation { Enroll = "ENROLL", Update = "UPDATE", Search = "SEARCH" }
);

wire_enum!(
    /// Where a transaction is. The last five are final.
    State {
        Processing = "PROCESSING",
        Pending = "PENDING",
        Exception = "EXCEPTION",
        Enrolled = "ENROLLED",
        Failed = "FAILED",
        Match = "MATCH",
        NotMatch = "NOT_MATCH",
        PersonNotFound = "PERSON_NOT_FOUND",
    }
);

wire_enum!(
    /// A final result reported by the biometric back office.
    Outcome {
        Enrolled = "ENROLLED",
        Failed = "FAILED",
        Match = "MATCH",
        NotMatch = "NOT_MATCH",
        PersonNotFound = "PERSON_NOT_FOUND",
    }
);

wire_enum!(
    /// A manual-review (MIR) decision on a PENDING transaction.
    Decision { Approve = "APPROVE", Reject = "REJECT" }
);

wire_enum!(
    /// An exception-treatment (ETR) decision on an EXCEPTION transaction.
    Treatment {
        SameFingers = "SAME_FINGERS",
        DifferentFingers = "DIFFERENT_FINGERS",
        MergeTransactions = "MERGE_TRANSACTIONS",
        Recollect = "RECOLLECT",
        IncorrectEnroll = "INCORRECT_ENROLL",
    }
);

wire_enum!(
    /// The `operation` label that UPDATE transactions carry in their notifications.
    UpdateLabel { Enroll = "ENROLL", Update = "UPDATE" }
);

impl State {
    pub fn is_final(self) -> bool {
        match self {
            State::Processing | State::Pending | State::Exception => false,
            State::Enrolled
            | State::Failed
            | State::Match
            | State::NotMatch
            | State::PersonNotFound => true,
        }
    }
}
