//! Sizes as the configuration file and the command line write them: bytes,
//! or a number with a decimal (`KB`, `MB`, `GB`, `TB`) or binary (`KiB`,
//! `MiB`, `GiB`, `TiB`) unit. Shared by `pruneConfig`'s watermarks and
//! `prune --max-size`.

/// Bytes, or a number with a unit: `k`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`
/// (powers of 1000) and `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
pub fn parse(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("1048576"), Ok(1_048_576));
        assert_eq!(parse("500MiB"), Ok(500 * 1024 * 1024));
        assert_eq!(parse("20GB"), Ok(20_000_000_000));
        assert_eq!(parse("1.5 kB"), Ok(1500));
        for bad in ["", "MB", "12 parsecs", "-3MB", "1e999GB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
