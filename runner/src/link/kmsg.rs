//! Tails `/dev/kmsg` from the first record of this boot and forwards every record. The
//! host classifies them; the runner does not judge the kernel.

use std::fs::File;
use std::io::Read;

use kchaos_model::protocol::{GuestMessage, KmsgRecord};

use crate::link::channel::Reporter;

pub fn spawn(reporter: Reporter) -> std::io::Result<()> {
    let mut file = File::open("/dev/kmsg")?;
    std::thread::Builder::new()
        .name("kchaos-kmsg".into())
        .spawn(move || {
            // One read returns one record; records are at most ~8 KiB.
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if let Some(record) = parse_record(&buf[..n]) {
                            reporter.send(GuestMessage::Kmsg(record));
                        }
                    }
                    // EPIPE: records were overwritten before we read them; carry on.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPIPE)
                            || e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("kchaos-runner: /dev/kmsg read failed: {e}");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// `prio,seq,ts_us,flags[,...];text\n KEY=value...`
pub fn parse_record(raw: &[u8]) -> Option<KmsgRecord> {
    let text = String::from_utf8_lossy(raw);
    let (header, rest) = text.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_us = fields.next()?.parse().ok()?;
    let message = rest.split('\n').next().unwrap_or("");
    Some(KmsgRecord {
        seq,
        level: u8::try_from(prio & 7).ok()?,
        ts_us,
        text: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let r = parse_record(b"4,1234,5678901,-;WARNING: CPU: 0 PID: 1 at x\n SUBSYSTEM=cpu\n")
            .unwrap();
        assert_eq!((r.level, r.seq, r.ts_us), (4, 1234, 5_678_901));
        assert_eq!(r.text, "WARNING: CPU: 0 PID: 1 at x");
        let r = parse_record(b"30,7,1,c;systemd[1]: hello\n").unwrap();
        assert_eq!(r.level, 6);
        assert!(parse_record(b"garbage").is_none());
    }
}
