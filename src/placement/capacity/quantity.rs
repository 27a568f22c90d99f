//! Kubernetes resource quantities (`500m`, `128Mi`, `1e3`), held exactly as integers of
//! 10^-9, as `k8s.io/apimachinery`'s `resource.Quantity` is exact: no floats.

use std::fmt;

/// A Kubernetes resource quantity (`500m`, `2`, `128Mi`, `1G`, `1e3`), held exactly as an
/// integer number of nano-units, as `k8s.io/apimachinery`'s `resource.Quantity` is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nano: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Kubernetes quantity: {problem}")]
pub struct QuantityError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses Kubernetes' quantity grammar: an optionally signed decimal number, then a binary
    /// suffix (`Ki` .. `Ei`), a decimal suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`,
    /// `E`) or a decimal exponent (`e3`, `E-2`). Precision below one nano-unit rounds up, as in
    /// Kubernetes.
    ///
    /// ```
    /// use flotilla::placement::capacity::Quantity;
    /// assert_eq!(Quantity::parse("500m").unwrap().milli_value(), 500);
    /// assert_eq!(Quantity::parse("128Mi").unwrap().value(), 128 << 20);
    /// assert_eq!(Quantity::parse("1e3").unwrap().value(), 1000);
    /// ```
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let fail = |problem| QuantityError {
            text: text.to_string(),
            problem,
        };
        let trimmed = text.trim();
        let (negative, rest) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            Some(_) => (false, trimmed),
            None => return Err(fail("it is empty")),
        };
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("it has no digits"));
        }
        if fraction.contains('.') {
            return Err(fail("it has two decimal points"));
        }
        // 38 digits overflow i128; Kubernetes quantities never need so many.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(fail("it has too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| fail("its digits do not parse"))?
        };
        // value = mantissa * numerator / denominator nano-units, every step checked.
        let too_large = || fail("it is too large or too precise");
        let power = |exponent: u32| 10i128.checked_pow(exponent);
        let (numerator, denominator): (Option<i128>, Option<i128>) = match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let step = "KMGTPE".find(&suffix[..1]).unwrap_or(0) as u32 + 1;
                (NANO.checked_mul(1i128 << (10 * step)), Some(1))
            }
            "n" => (Some(1), Some(1)),
            "u" => (power(3), Some(1)),
            "m" => (power(6), Some(1)),
            "" => (power(9), Some(1)),
            "k" => (power(12), Some(1)),
            "M" => (power(15), Some(1)),
            "G" => (power(18), Some(1)),
            "T" => (power(21), Some(1)),
            "P" => (power(24), Some(1)),
            "E" => (power(27), Some(1)),
            _ => {
                let exponent = suffix
                    .strip_prefix(['e', 'E'])
                    .and_then(|e| e.parse::<i32>().ok())
                    .ok_or_else(|| {
                        fail("unknown suffix (Ki..Ei, n, u, m, k, M, G, T, P, E or e<N>)")
                    })?;
                let shift = exponent.checked_add(9).ok_or_else(too_large)?;
                if shift >= 0 {
                    (power(shift.unsigned_abs()), Some(1))
                } else {
                    (Some(1), power(shift.unsigned_abs()))
                }
            }
        };
        let denominator = denominator
            .zip(power(fraction.len() as u32))
            .and_then(|(d, f)| d.checked_mul(f))
            .ok_or_else(too_large)?;
        let numerator = numerator.ok_or_else(too_large)?;
        let scaled = mantissa.checked_mul(numerator).ok_or_else(too_large)?;
        // Below a nano-unit rounds up (away from zero), as Kubernetes does.
        let magnitude = ceil_div(scaled, denominator);
        Ok(Quantity {
            nano: if negative { -magnitude } else { magnitude },
        })
    }

    /// The value rounded up to a whole unit (Kubernetes' `Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.nano, NANO)
    }

    /// The value in thousandths rounded up (Kubernetes' `Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nano, 1_000_000)
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nano < 0
    }
}

/// Division rounding toward positive infinity.
fn ceil_div(value: i128, by: i128) -> i128 {
    let quotient = value.div_euclid(by);
    if value.rem_euclid(by) == 0 {
        quotient
    } else {
        quotient + 1
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            nano: self.nano.saturating_sub(other.nano),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nano % NANO == 0 {
            write!(f, "{}", self.nano / NANO)
        } else {
            write!(f, "{}n", self.nano)
        }
    }
}
