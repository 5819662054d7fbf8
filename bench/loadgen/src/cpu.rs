//! CPU time of the process under test, from `/proc/PID/stat` (Linux), sampled exactly at
//! the edges of the measured window.

use anyhow::Context as _;

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
///
/// The second field (the command name) is in parentheses and may itself hold spaces or
/// parentheses, so fields are counted from the last `)`: after it come field 3 (state)
/// onwards, which puts utime (14) and stime (15) at offsets 11 and 12.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The summed CPU ticks of `pids`.
pub fn ticks(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let t = parse_stat_ticks(&text).with_context(|| format!("unexpected format of {path}"))?;
        total = total.saturating_add(t);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_plus_stime_even_with_odd_command_names() {
        let line = "1234 (key gate) (x)) S 1 1234 1234 0 -1 4194560 9000 0 0 0 250 75 0 0 20 0 6 0 100 0 0";
        assert_eq!(parse_stat_ticks(line), Some(325));
        let plain = "42 (nginx) S 1 42 42 0 -1 4194624 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ticks(plain), Some(10));
        assert_eq!(parse_stat_ticks("42 nginx S 1"), None);
        assert_eq!(parse_stat_ticks("42 (nginx) S 1 2 3"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(ticks(&[me]).is_ok());
    }
}
