//! What a request costs, in nano-dollars.
//!
//! Integers so budget counters add exactly; nano-dollars because the
//! cheapest prices are fractions of a micro-dollar per token, and because a
//! Redis Lua number (a double) holds them exactly up to $9M per counter.

use tenant_registry::Price;

/// 1e-9 USD.
pub type Nanos = u64;

pub fn usd_to_nanos(usd: f64) -> Nanos {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round() as Nanos
    } else {
        0
    }
}

pub fn nanos_to_usd(nanos: Nanos) -> f64 {
    nanos as f64 / 1e9
}

/// Pico-dollars per token of a price in USD per million tokens. Prices are
/// quoted with a few decimals, so this integer is exact; summing integers
/// keeps a cost exact where summing `tokens × price` in f64 did not
/// (34 × 0.2 + 8 × 0.6 came to 11.600000000000001 and was rounded up to
/// 11,601 nano-dollars for an 11,600 charge).
fn picos_per_token(usd_per_mtok: f64) -> u128 {
    let picos = (usd_per_mtok * 1e6).round();
    if picos.is_finite() && picos > 0.0 {
        picos as u128
    } else {
        0
    }
}

/// The most a request can cost: the prompt estimate at the input price and
/// every reserved output token at the output price. Rounded up.
pub fn upper_bound(price: &Price, est_prompt_tokens: u64, max_tokens: u64) -> Nanos {
    to_nanos(
        u128::from(est_prompt_tokens) * picos_per_token(price.input_per_mtok)
            + u128::from(max_tokens) * picos_per_token(price.output_per_mtok),
    )
}

/// What a request did cost. `cached` prompt tokens (a subset of `prompt`)
/// are charged at the cached-input price, which defaults to the input price.
pub fn actual(price: &Price, prompt: u64, completion: u64, cached: u64) -> Nanos {
    let cached = cached.min(prompt);
    let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
    to_nanos(
        u128::from(prompt - cached) * picos_per_token(price.input_per_mtok)
            + u128::from(cached) * picos_per_token(cached_price)
            + u128::from(completion) * picos_per_token(price.output_per_mtok),
    )
}

/// Pico-dollars to nano-dollars, rounded up (a fraction of a nano-dollar
/// is charged, never given away).
fn to_nanos(picos: u128) -> Nanos {
    Nanos::try_from(picos.div_ceil(1_000)).unwrap_or(Nanos::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> Price {
        Price {
            input_per_mtok: 0.20,
            output_per_mtok: 0.60,
            cached_input_per_mtok: Some(0.05),
        }
    }

    #[test]
    fn reservation_is_an_upper_bound() {
        // 1,000 prompt tokens at $0.20/M + 500 output at $0.60/M = $0.0005.
        assert_eq!(upper_bound(&price(), 1_000, 500), 500_000);
        assert_eq!(nanos_to_usd(500_000), 0.0005);
    }

    #[test]
    fn cached_tokens_use_the_cached_price() {
        // 600 uncached at 0.20 + 400 cached at 0.05 + 100 out at 0.60.
        assert_eq!(actual(&price(), 1_000, 100, 400), 120_000 + 20_000 + 60_000);
        let mut p = price();
        p.cached_input_per_mtok = None;
        assert_eq!(actual(&p, 1_000, 0, 400), 200_000);
        // More cached than prompt tokens is clamped.
        assert_eq!(actual(&price(), 10, 0, 99), 500);
    }

    #[test]
    fn costs_are_exact_where_floats_are_not() {
        // Seen against real vLLM: f64 made this 11,601.
        assert_eq!(actual(&price(), 34, 8, 0), 34 * 200 + 8 * 600);
        assert_eq!(actual(&price(), 704, 4, 0), 704 * 200 + 4 * 600);
        assert_eq!(upper_bound(&price(), 34, 8), 11_600);
        // 0.1 nano-dollar per token: a fraction of a nano-dollar rounds up.
        let tiny = Price {
            input_per_mtok: 0.0001,
            output_per_mtok: 0.0,
            cached_input_per_mtok: None,
        };
        assert_eq!(actual(&tiny, 1, 0, 0), 1);
        assert_eq!(actual(&tiny, 10, 0, 0), 1);
        assert_eq!(actual(&tiny, 11, 0, 0), 2);
    }

    #[test]
    fn budgets_convert_exactly() {
        assert_eq!(usd_to_nanos(50.0), 50_000_000_000);
        assert_eq!(usd_to_nanos(0.1), 100_000_000);
        assert_eq!(usd_to_nanos(-1.0), 0);
    }
}
