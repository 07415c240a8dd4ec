//! What a request costs, in nano-dollars.
//!
//! Integers so budget counters add exactly; nano-dollars because the
//! cheapest prices are fractions of a micro-dollar per token, and because a
//! Redis Lua number (a double) holds them exactly up to $9M per counter.

use tenant_registry::Price;

/// 1e-9 USD.
pub type Nanos = u64;

/// USD per million tokens is 1,000 nano-dollars per token.
const NANOS_PER_TOKEN_PER_MTOK_PRICE: f64 = 1_000.0;

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

/// The most a request can cost: the prompt estimate at the input price and
/// every reserved output token at the output price. Rounded up.
pub fn upper_bound(price: &Price, est_prompt_tokens: u64, max_tokens: u64) -> Nanos {
    to_nanos(
        est_prompt_tokens as f64 * price.input_per_mtok + max_tokens as f64 * price.output_per_mtok,
    )
}

/// What a request did cost. `cached` prompt tokens (a subset of `prompt`)
/// are charged at the cached-input price, which defaults to the input price.
pub fn actual(price: &Price, prompt: u64, completion: u64, cached: u64) -> Nanos {
    let cached = cached.min(prompt);
    let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
    to_nanos(
        (prompt - cached) as f64 * price.input_per_mtok
            + cached as f64 * cached_price
            + completion as f64 * price.output_per_mtok,
    )
}

fn to_nanos(tokens_times_mtok_price: f64) -> Nanos {
    let n = (tokens_times_mtok_price * NANOS_PER_TOKEN_PER_MTOK_PRICE).ceil();
    if n.is_finite() && n > 0.0 {
        n as Nanos
    } else {
        0
    }
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
    fn budgets_convert_exactly() {
        assert_eq!(usd_to_nanos(50.0), 50_000_000_000);
        assert_eq!(usd_to_nanos(0.1), 100_000_000);
        assert_eq!(usd_to_nanos(-1.0), 0);
    }
}
