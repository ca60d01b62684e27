//! Priorities, their score, the queue band the score puts a task in, and deadlines.
//!
//! A task's score is its priority's level (`critical` 4, `high` 3, `normal` 2, `low` 1) times
//! its type's multiplier, which a tenant may configure (defaults in [`DEFAULT_MULTIPLIERS`],
//! 1.0 for any other type). The score picks the task's band, and each band has queues and
//! capacity of its own, so urgent work never waits behind a backlog of ordinary work. Within a
//! band, tasks are taken in the order SQS delivers them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    pub const fn level(self) -> f64 {
        match self {
            Priority::Critical => 4.0,
            Priority::High => 3.0,
            Priority::Normal => 2.0,
            Priority::Low => 1.0,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown priority `{name}`; known priorities are critical, high, normal, low"
                )
            })
    }
}

/// Multipliers by task type, before a tenant's own.
pub const DEFAULT_MULTIPLIERS: [(&str, f64); 5] = [
    ("fraud_detection", 1.5),
    ("finance", 1.5),
    ("crypto_prediction", 1.2),
    ("email_campaign", 1.0),
    ("video_generation", 0.8),
];
/// Bounds of a configured multiplier.
pub const MAX_MULTIPLIER: f64 = 100.0;

/// A tenant's multipliers: the defaults, with its own over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Multipliers(pub BTreeMap<String, f64>);

impl Default for Multipliers {
    fn default() -> Self {
        Multipliers(
            DEFAULT_MULTIPLIERS
                .iter()
                .map(|(t, m)| (t.to_string(), *m))
                .collect(),
        )
    }
}

impl Multipliers {
    /// The defaults with `own` over them.
    pub fn with(own: &BTreeMap<String, f64>) -> Self {
        let mut all = Multipliers::default();
        all.0.extend(own.iter().map(|(t, m)| (t.clone(), *m)));
        all
    }

    pub fn of(&self, task_type: Option<&str>) -> f64 {
        task_type
            .and_then(|t| self.0.get(t))
            .copied()
            .unwrap_or(1.0)
    }

    /// The task's score: its priority's level times its type's multiplier.
    pub fn score(&self, priority: Priority, task_type: Option<&str>) -> f64 {
        priority.level() * self.of(task_type)
    }
}

/// The most task types a tenant may give multipliers: they live on one item (at most about
/// 20 KB at this count, far below DynamoDB's 400 KB).
pub const MAX_MULTIPLIERS: usize = 200;

/// Checks configured multipliers: positive and bounded, keyed by a name, at most
/// [`MAX_MULTIPLIERS`] of them.
pub fn check_multipliers(own: &BTreeMap<String, f64>) -> Result<(), (String, String)> {
    if own.len() > MAX_MULTIPLIERS {
        return Err((
            "multipliers".into(),
            format!(
                "at most {MAX_MULTIPLIERS} task types may have a multiplier, this has {}",
                own.len()
            ),
        ));
    }
    for (task_type, m) in own {
        if task_type.is_empty() || task_type.len() > 64 {
            return Err((
                format!("multipliers.{task_type}"),
                "a task type is 1 to 64 characters".into(),
            ));
        }
        if !(*m > 0.0 && *m <= MAX_MULTIPLIER) {
            return Err((
                format!("multipliers.{task_type}"),
                format!("must be a positive number up to {MAX_MULTIPLIER}, got {m}"),
            ));
        }
    }
    Ok(())
}

/// The queues a task travels through, by score: each band has its own route and execute
/// queues, event source mappings and concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// Score 4 and above: critical work, and high work of a type weighted 1.5.
    Urgent,
    /// Score 2.5 and above.
    High,
    /// The rest: normal and low work.
    #[default]
    Standard,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Urgent, Band::High, Band::Standard];
    pub const URGENT_FROM: f64 = 4.0;
    pub const HIGH_FROM: f64 = 2.5;

    pub fn of_score(score: f64) -> Band {
        if score >= Self::URGENT_FROM {
            Band::Urgent
        } else if score >= Self::HIGH_FROM {
            Band::High
        } else {
            Band::Standard
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Band::Urgent => "urgent",
            Band::High => "high",
            Band::Standard => "standard",
        }
    }

    pub fn is_standard(&self) -> bool {
        *self == Band::Standard
    }
}

/// The latest a deadline may be, from submission: far enough for any real schedule, near
/// enough to catch a timestamp in the wrong unit.
pub const MAX_DEADLINE_S: i64 = 30 * 86_400;

/// A task's deadline from `deadline` (RFC 3339) or `deadline_s` (seconds from now), as epoch
/// milliseconds. Errors name the field.
pub fn parse_deadline(
    deadline: Option<&str>,
    deadline_s: Option<f64>,
    now_ms: i64,
) -> Result<Option<i64>, (String, String)> {
    let at_ms = match (deadline, deadline_s) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err((
                "deadline".into(),
                "give either deadline or deadline_s, not both".into(),
            ))
        }
        (Some(text), None) => {
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                    (
                        "deadline".to_string(),
                        format!("`{text}` is not an RFC 3339 time: {e}"),
                    )
                })?;
            let ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
            if ms <= now_ms {
                return Err(("deadline".into(), format!("`{text}` is in the past")));
            }
            ms
        }
        (None, Some(seconds)) => {
            if !(seconds > 0.0 && seconds <= MAX_DEADLINE_S as f64) {
                return Err((
                    "deadline_s".into(),
                    format!(
                        "must be a number of seconds from 0 to {MAX_DEADLINE_S}, got {seconds}"
                    ),
                ));
            }
            now_ms + (seconds * 1000.0).round() as i64
        }
    };
    if at_ms - now_ms > MAX_DEADLINE_S * 1000 {
        return Err((
            "deadline".into(),
            format!("is more than {MAX_DEADLINE_S} seconds away"),
        ));
    }
    Ok(Some(at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_comes_out_in_its_order() {
        let m = Multipliers::default();
        let scored = [
            ("finance", m.score(Priority::Critical, Some("finance"))),
            ("fraud", m.score(Priority::High, Some("fraud_detection"))),
            ("video", m.score(Priority::High, Some("video_generation"))),
            ("email", m.score(Priority::Normal, Some("email_campaign"))),
        ];
        let values: Vec<f64> = scored.iter().map(|(_, s)| *s).collect();
        assert_eq!(values, vec![6.0, 4.5, 2.4000000000000004, 2.0]);
        assert!(values.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(m.score(Priority::Low, Some("anything")), 1.0);
        assert_eq!(m.score(Priority::Normal, None), 2.0);
    }

    #[test]
    fn a_tenant_overrides_a_multiplier_and_keeps_the_rest() {
        let own = BTreeMap::from([("finance".to_string(), 3.0), ("ads".to_string(), 0.5)]);
        let m = Multipliers::with(&own);
        assert_eq!(m.of(Some("finance")), 3.0);
        assert_eq!(m.of(Some("ads")), 0.5);
        assert_eq!(m.of(Some("fraud_detection")), 1.5);
        let bad = BTreeMap::from([("finance".to_string(), 0.0)]);
        assert_eq!(
            check_multipliers(&bad).unwrap_err().0,
            "multipliers.finance"
        );
        let many: BTreeMap<String, f64> = (0..=MAX_MULTIPLIERS)
            .map(|i| (format!("t{i}"), 1.0))
            .collect();
        assert_eq!(check_multipliers(&many).unwrap_err().0, "multipliers");
    }

    #[test]
    fn scores_fall_into_bands() {
        assert_eq!(Band::of_score(6.0), Band::Urgent);
        assert_eq!(Band::of_score(4.0), Band::Urgent);
        assert_eq!(Band::of_score(3.0), Band::High);
        assert_eq!(Band::of_score(2.4), Band::Standard);
        assert_eq!(Band::of_score(2.0), Band::Standard);
        assert!(Priority::parse("urgent").unwrap_err().contains("critical"));
    }

    #[test]
    fn deadlines_are_parsed_and_checked() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_deadline(None, Some(30.0), now),
            Ok(Some(now + 30_000))
        );
        assert_eq!(
            parse_deadline(Some("2023-11-14T22:13:50Z"), None, now),
            Ok(Some(1_700_000_030_000))
        );
        assert_eq!(
            parse_deadline(Some("2023-11-15T00:13:50+02:00"), None, now),
            Ok(Some(1_700_000_030_000))
        );
        assert_eq!(
            parse_deadline(Some("2020-01-01T00:00:00Z"), None, now)
                .unwrap_err()
                .0,
            "deadline"
        );
        assert_eq!(
            parse_deadline(Some("tomorrow"), None, now).unwrap_err().0,
            "deadline"
        );
        assert_eq!(
            parse_deadline(None, Some(-1.0), now).unwrap_err().0,
            "deadline_s"
        );
        assert_eq!(
            parse_deadline(None, Some(0.0), now).unwrap_err().0,
            "deadline_s"
        );
        assert!(parse_deadline(Some("2023-11-14T22:13:50Z"), Some(1.0), now).is_err());
    }
}
