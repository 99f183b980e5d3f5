//! Loopback ports for brokers that must come back on the same ports after a restart.

/// The first of `count` consecutive free loopback TCP ports, for a broker that must come back
/// on the same ports after a restart (tests, tools). They lie below the kernel's ephemeral
/// port range: while the broker is down, no outgoing connection can be given one of them as
/// its local port (another test's client, or a client reconnecting to the broker's own port,
/// which on loopback can connect to itself), which would keep the broker from binding again.
/// A block is not handed out twice in one process.
pub fn loopback_port_block(count: u16) -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let ephemeral_low = ephemeral_port_low();
    let bottom: u16 = 10_000.min(ephemeral_low / 2);
    let top = ephemeral_low.saturating_sub(count);
    let span = u32::from(top.saturating_sub(bottom)).max(1);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Start somewhere different in each process, then walk the range.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for step in 0..span {
        let first = bottom + ((seed.wrapping_add(step * u32::from(count))) % span) as u16;
        let taken = handed_out
            .iter()
            .any(|&(f, n)| first < f + n && f < first + count);
        let free =
            || (0..count).all(|d| std::net::TcpListener::bind(("127.0.0.1", first + d)).is_ok());
        if !taken && free() {
            handed_out.push((first, count));
            return first;
        }
    }
    panic!("no {count} free loopback ports between {bottom} and {ephemeral_low}");
}

/// The lowest port the kernel gives outgoing connections (`low high` in
/// `ip_local_port_range`; Linux's default if unreadable).
fn ephemeral_port_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_are_free_below_the_ephemeral_range_and_never_handed_out_twice() {
        let low = ephemeral_port_low();
        let mut blocks: Vec<u16> = (0..50).map(|_| loopback_port_block(4)).collect();
        for &b in &blocks {
            assert!(b + 4 <= low, "{b} below the ephemeral range ({low})");
            for d in 0..4 {
                std::net::TcpListener::bind(("127.0.0.1", b + d)).expect("free");
            }
        }
        blocks.sort_unstable();
        assert!(
            blocks.windows(2).all(|w| w[1] >= w[0] + 4),
            "{blocks:?} overlap"
        );
    }
}
