//! The committed baseline against the current API: breaks fail, and so does a
//! baseline that merely lags behind compatible changes, so every API change lands
//! in the baseline in the same commit and the next break is measured from it.

use std::fmt;

use crate::compat::{WireBreak, breaking_changes};
use crate::snapshot::WireSnapshot;
use crate::snapshot_text::SnapshotParseError;
use crate::{BASELINE_FILE, diff};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineVerdict {
    UpToDate,
    /// Nothing breaks, but the baseline does not record the current API yet.
    OutOfDate {
        changes: String,
    },
    Breaking {
        breaks: Vec<WireBreak>,
        changes: String,
    },
}

impl BaselineVerdict {
    pub fn is_up_to_date(&self) -> bool {
        matches!(self, Self::UpToDate)
    }
}

/// Compares the committed baseline text with the current suite API (see [`WireSnapshot::suite_api`]).
pub fn compare_with_baseline(baseline_text: &str, current: &WireSnapshot) -> Result<BaselineVerdict, SnapshotParseError> {
    let baseline = WireSnapshot::parse(baseline_text)?;
    let current_text = current.render();
    // Line endings may be rewritten by a checkout; they are not a change.
    if baseline_text.replace("\r\n", "\n") == current_text {
        return Ok(BaselineVerdict::UpToDate);
    }
    let changes = diff::changed_lines(baseline_text, &current_text);
    let breaks = breaking_changes(&baseline, current);
    Ok(if breaks.is_empty() {
        BaselineVerdict::OutOfDate { changes }
    } else {
        BaselineVerdict::Breaking { breaks, changes }
    })
}

impl fmt::Display for BaselineVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UpToDate => write!(f, "the protobuf API matches {BASELINE_FILE}"),
            Self::OutOfDate { changes } => write!(
                f,
                "{BASELINE_FILE} is out of date. Nothing breaks, but the API changed compatibly \
                 (additions, or renames that keep field numbers) and the baseline does not record it yet.\n\
                 Run `just contracts-update` and commit {BASELINE_FILE} with the change, so the next \
                 change is checked against it.\n\nChanges (- baseline, + current):\n{changes}"
            ),
            Self::Breaking { breaks, changes } => {
                writeln!(
                    f,
                    "The protobuf API breaks the wire contract recorded in {BASELINE_FILE}; clients and \
                     servers built from the baseline would misread, reject or fail these calls:"
                )?;
                for wire_break in breaks {
                    writeln!(f, "  - {wire_break}")?;
                }
                write!(
                    f,
                    "\nPrefer a compatible change: a new field number, a new method, or a new package version \
                     (suite.x.v2) beside the old one, and reserve numbers and names you retire.\n\
                     If the break is deliberate (nothing deployed relies on it yet), rewrite the baseline with \
                     `just contracts-update` and commit {BASELINE_FILE} with the change, so the review sees it.\n\
                     \nChanges (- baseline, + current):\n{changes}"
                )
            }
        }
    }
}
