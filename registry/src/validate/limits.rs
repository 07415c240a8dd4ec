//! `limits = { ... }` of a tier, a tenant or one of its models.

use std::collections::HashSet;

use crate::error::{RegistryError, invalid};

pub(super) fn check_positive(value: Option<f64>, field: String) -> Result<(), RegistryError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(invalid(field, "must be a finite number >= 0")),
        _ => Ok(()),
    }
}

pub(super) fn check_limits(limits: &crate::Limits, field: &str) -> Result<(), RegistryError> {
    check_positive(limits.daily_budget_usd, format!("{field}.daily_budget_usd"))?;
    check_positive(
        limits.monthly_budget_usd,
        format!("{field}.monthly_budget_usd"),
    )?;
    if let Some(r) = limits.budget_alert_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(invalid(
            format!("{field}.budget_alert_ratio"),
            "must be in (0, 1]",
        ));
    }
    // A window declared twice would leave which one counts to chance; the
    // shorthands count as their windows.
    let mut seen: HashSet<_> = limits.shorthands().map(|(window, _)| window).collect();
    for (j, w) in limits.windows.iter().enumerate() {
        let at = format!("{field}.windows[{j}]");
        let Some((unit, amount)) = w.amount() else {
            return Err(invalid(
                at,
                "set exactly one of `requests`, `tokens` or `usd`",
            ));
        };
        let Some(per) = w.per else {
            return Err(invalid(
                format!("{at}.per"),
                "required: second, minute, hour, day, calendar_day or calendar_month",
            ));
        };
        if unit == crate::Unit::Usd {
            check_positive(Some(amount), format!("{at}.usd"))?;
        }
        if !seen.insert((unit, per)) {
            return Err(invalid(
                at,
                format!(
                    "{} per {} is already limited in this table (`rpm`, `tpm`, \
                     `daily_budget_usd` and `monthly_budget_usd` are windows too)",
                    unit.name(),
                    per.name()
                ),
            ));
        }
    }
    Ok(())
}
