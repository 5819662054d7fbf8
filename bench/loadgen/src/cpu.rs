//! CPU time of the process under test, from `/proc/PID/stat` (Linux), and of the whole
//! machine, from `/proc/stat`, sampled exactly at the edges of the measured window.

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

/// The whole machine's CPU ticks, summed over its cores, from the text of `/proc/stat`:
/// `(busy, idle)`. Busy is user, nice, system, irq, softirq and steal; idle is idle and
/// iowait. Guest time is already inside user and nice, so it is not added again.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = f.as_slice().try_into().ok()?;
    let busy = [user, nice, system, irq, softirq, steal]
        .into_iter()
        .try_fold(0u64, u64::checked_add)?;
    Some((busy, idle.checked_add(iowait)?))
}

/// The whole machine's `(busy, idle)` CPU ticks so far.
pub fn machine() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_ticks(&text).context("unexpected format of /proc/stat")
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
    fn reads_the_machine_line_of_proc_stat() {
        let stat = "cpu  100 5 50 1000 20 3 7 2 9 0\ncpu0 50 2 25 500 10 1 3 1 4 0\nintr 1 2\n";
        // busy: 100 + 5 + 50 + 3 + 7 + 2; idle: 1000 + 20 (guest's 9 is inside user).
        assert_eq!(parse_machine_ticks(stat), Some((167, 1020)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
        assert!(machine().is_ok());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(ticks(&[me]).is_ok());
    }
}
