//! Process and clock helpers: CLOCK_MONOTONIC, /proc readings, source-address binding.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::TcpSocket;

/// CLOCK_MONOTONIC in nanoseconds. The clock is system-wide, so values taken in different
/// processes on one host can be subtracted (the trigger's `t0` travels inside the event).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn proc_file(pid: u32, name: &str) -> String {
    let path = if pid == 0 { format!("/proc/self/{name}") } else { format!("/proc/{pid}/{name}") };
    std::fs::read_to_string(path).unwrap_or_default()
}

/// VmRSS of a process in KiB (`pid` 0 = this process); 0 when unknown.
pub fn rss_kib(pid: u32) -> u64 {
    proc_file(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process in seconds (`pid` 0 = this process).
pub fn cpu_secs(pid: u32) -> f64 {
    let s = proc_file(pid, "stat");
    // The command name may hold spaces; fields are counted after its closing ")".
    let Some(idx) = s.rfind(')') else { return 0.0 };
    let f: Vec<&str> = s[idx + 1..].split_whitespace().collect();
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    if f.len() < 13 {
        return 0.0;
    }
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if hz > 0.0 {
        ticks / hz
    } else {
        0.0
    }
}

/// CPU seconds the whole machine spent busy (all cores; /proc/stat: user, nice, system, irq,
/// softirq and steal, i.e. all but idle and iowait).
pub fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    if f.len() < 8 {
        return 0.0;
    }
    // user nice system idle iowait irq softirq steal
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / hz.max(1.0)
}

/// Binds `sock` to `ip` with IP_BIND_ADDRESS_NO_PORT, so that the port is picked at connect
/// time per 4-tuple and many source addresses multiply the usable ports.
pub fn bind_source(sock: &TcpSocket, ip: Ipv4Addr) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))
}

/// Raises the soft open-files limit to the hard limit. Returns the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid rlimit to fill and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    rl.rlim_cur
}

/// Asks the kernel to send SIGTERM to this process when its parent dies (worker processes).
pub fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_proc() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
        assert!(rss_kib(0) > 0);
        assert!(cpu_secs(0) >= 0.0);
    }
}
