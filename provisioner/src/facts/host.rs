//! Host facts with Ansible's names and shapes (`ansible_*`), gathered in one round trip by a
//! POSIX sh script and parsed here. Shapes follow ansible-core 2.14's `setup` module (see
//! `tests/fixtures/facts/ansible_setup_2.14.json`, trimmed from `ansible localhost -m setup`
//! on Debian 12).

use serde_json::{json, Map, Value};

/// One POSIX sh script that prints every section the parser needs, each introduced by a
/// `===<name>===` line. It uses only what a minimal Debian 12 has (coreutils, iproute2,
/// hostname, awk); `lsb_release`, `systemd-detect-virt` and python3 are used when present.
/// It runs on every host before every play, so it forks as little as it can: one `uname`, one
/// `date`, one `id`, one `df` for all mounts, shell builtins for one-line files.
pub fn gather_script() -> &'static str {
    r#"
LC_ALL=C; export LC_ALL
echo '===uname==='; uname -snrvm
echo '===fqdn==='; hostname -f 2>/dev/null || uname -n
echo '===os-release==='; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo '===debian_version==='; { read -r v </etc/debian_version && echo "$v"; } 2>/dev/null
echo '===lsb==='; command -v lsb_release >/dev/null 2>&1 && lsb_release -a 2>/dev/null
echo '===route4==='; ip -o -4 route get 8.8.8.8 2>/dev/null || ip -o -4 route show default 2>/dev/null
echo '===link==='; ip -o link show 2>/dev/null
echo '===addr==='; ip -o addr show 2>/dev/null
echo '===cpuinfo==='; grep -E '^(processor|physical id|cpu cores|siblings)[[:space:]]*:' /proc/cpuinfo 2>/dev/null
echo '===meminfo==='; grep -E '^(MemTotal|MemFree|SwapTotal|SwapFree):' /proc/meminfo 2>/dev/null
echo '===python==='; for p in /usr/bin/python3 python3; do if command -v "$p" >/dev/null 2>&1; then command -v "$p"; "$p" -V 2>&1; break; fi; done
echo '===init==='; { read -r c </proc/1/comm && echo "$c"; } 2>/dev/null; [ -d /run/systemd/system ] && echo run-systemd
echo '===pkg==='; for m in apt-get dnf yum zypper apk pacman; do command -v $m >/dev/null 2>&1 && { echo $m; break; }; done
echo '===date==='; date '+%Y %m %d %H %M %S %s %Z %z %A %w %W %N'
echo '===env==='; printf 'HOME=%s\nPATH=%s\nUSER=%s\nSHELL=%s\nLANG=%s\n' "$HOME" "$PATH" "$USER" "$SHELL" "$LANG"
echo '===user==='; id
echo '===virt==='
if [ -f /run/systemd/container ]; then { read -r c </run/systemd/container; echo "runcontainer=$c"; } 2>/dev/null
elif command -v systemd-detect-virt >/dev/null 2>&1; then echo "detect=$(systemd-detect-virt 2>/dev/null)"; fi
[ -f /.dockerenv ] && echo dockerenv
echo '===mounts==='
df -B1 -a --output=size,avail,target 2>/dev/null | awk '
  NR > 1 && $1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {
    t = $0; sub(/^[ \t]*[0-9]+[ \t]+[0-9]+[ \t]+/, "", t); size[t] = $1; avail[t] = $2
  }
  END {
    while ((getline line < "/proc/mounts") > 0) {
      split(line, f, " ")
      if (f[1] !~ /^\// && f[1] !~ /:\//) continue
      t = f[2]; gsub(/\\040/, " ", t); gsub(/\\011/, "\t", t); gsub(/\\012/, "\n", t); gsub(/\\134/, "\\", t)
      if (t in size) print f[1] "\t" f[2] "\t" f[3] "\t" f[4] "\t" size[t] "\t" avail[t]
    }
  }'
echo '===end==='
"#
}

fn sections(stdout: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("===").and_then(|l| l.strip_suffix("===")) {
            out.push((name, Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line);
        }
    }
    out
}

fn prefix_to_netmask(prefix: u32) -> [u8; 4] {
    let mask: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    mask.to_be_bytes()
}

fn dotted(b: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn parse_v4(s: &str) -> Option<[u8; 4]> {
    let addr: std::net::Ipv4Addr = s.parse().ok()?;
    Some(addr.octets())
}

#[derive(Default, Clone)]
struct Iface {
    name: String,
    mtu: Option<u64>,
    up: bool,
    promisc: bool,
    kind: String,
    mac: Option<String>,
    ipv4: Vec<Map<String, Value>>,
    ipv6: Vec<Value>,
}

/// Build Ansible's facts from the script's output: every fact as `ansible_<name>` plus the
/// same map without the prefix under `ansible_facts`.
pub fn parse_host_facts(stdout: &str) -> Result<Map<String, Value>, String> {
    let secs = sections(stdout);
    if !secs.iter().any(|(n, _)| *n == "end") {
        return Err("host facts: the gather script's output is incomplete (no end marker)".into());
    }
    let get = |name: &str| -> Vec<&str> {
        secs.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let first = |name: &str| -> String {
        get(name)
            .first()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut f = Map::new();

    // `uname -snrvm`: system, nodename, release, the version (it has spaces), machine.
    let uname_line = first("uname");
    let mut un = uname_line.splitn(4, ' ');
    let (system, nodename, release) = (
        un.next().unwrap_or_default(),
        un.next().unwrap_or_default().to_string(),
        un.next().unwrap_or_default(),
    );
    let (version, machine) = un
        .next()
        .and_then(|rest| rest.rsplit_once(' '))
        .unwrap_or_default();

    // names
    if nodename.is_empty() {
        return Err("host facts: no nodename in the gather output".into());
    }
    let fqdn = {
        let v = first("fqdn");
        if v.is_empty() {
            nodename.clone()
        } else {
            v
        }
    };
    f.insert(
        "hostname".into(),
        json!(nodename.split('.').next().unwrap_or_default()),
    );
    f.insert("nodename".into(), json!(nodename));
    f.insert(
        "domain".into(),
        json!(fqdn.split_once('.').map(|x| x.1).unwrap_or("")),
    );
    f.insert("fqdn".into(), json!(fqdn));

    // kernel
    f.insert("system".into(), json!(system));
    f.insert("kernel".into(), json!(release));
    f.insert("kernel_version".into(), json!(version));
    f.insert("machine".into(), json!(machine));
    f.insert("architecture".into(), json!(machine));
    f.insert("userspace_architecture".into(), json!(machine));

    // distribution
    let mut osr: Map<String, Value> = Map::new();
    for l in get("os-release") {
        if let Some((k, v)) = l.split_once('=') {
            osr.insert(
                k.trim().to_string(),
                json!(v.trim().trim_matches('"').trim_matches('\'')),
            );
        }
    }
    let os = |k: &str| osr.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let id = os("ID");
    let distribution = match id.as_str() {
        "debian" => "Debian".to_string(),
        "ubuntu" => "Ubuntu".to_string(),
        "centos" => "CentOS".to_string(),
        "rhel" => "RedHat".to_string(),
        "fedora" => "Fedora".to_string(),
        other => os("NAME")
            .split_whitespace()
            .next()
            .unwrap_or(other)
            .to_string(),
    };
    let os_family = match id.as_str() {
        "debian" | "ubuntu" | "raspbian" | "linuxmint" => "Debian",
        "centos" | "rhel" | "fedora" | "rocky" | "almalinux" => "RedHat",
        _ => distribution.as_str(),
    }
    .to_string();
    let debian_version = first("debian_version");
    let version = if id == "debian"
        && debian_version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    {
        debian_version
    } else {
        os("VERSION_ID")
    };
    let major = version.split('.').next().unwrap_or("").to_string();
    let codename = {
        let c = os("VERSION_CODENAME");
        if c.is_empty() {
            os("DEBIAN_CODENAME")
        } else {
            c
        }
    };
    f.insert("distribution".into(), json!(distribution));
    f.insert("os_family".into(), json!(os_family));
    f.insert("distribution_release".into(), json!(codename));
    f.insert("distribution_version".into(), json!(version));
    f.insert("distribution_major_version".into(), json!(major));

    // lsb: lsb_release when installed; else derived from os-release (Ansible would report {})
    let mut lsb = Map::new();
    for l in get("lsb") {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k.trim() {
                "Distributor ID" => {
                    lsb.insert("id".into(), json!(v));
                }
                "Description" => {
                    lsb.insert("description".into(), json!(v));
                }
                "Release" => {
                    lsb.insert("release".into(), json!(v));
                    lsb.insert(
                        "major_release".into(),
                        json!(v.split('.').next().unwrap_or(v)),
                    );
                }
                "Codename" => {
                    lsb.insert("codename".into(), json!(v));
                }
                _ => {}
            }
        }
    }
    if lsb.is_empty() && !id.is_empty() {
        let release = os("VERSION_ID");
        lsb.insert("codename".into(), json!(codename));
        lsb.insert("description".into(), json!(os("PRETTY_NAME")));
        lsb.insert("id".into(), json!(distribution));
        lsb.insert(
            "major_release".into(),
            json!(release.split('.').next().unwrap_or("")),
        );
        lsb.insert("release".into(), json!(release));
    }
    f.insert("lsb".into(), Value::Object(lsb));

    // network
    let mut ifaces: Vec<Iface> = Vec::new();
    for l in get("link") {
        // "2: eth0@if5: <BROADCAST,UP,LOWER_UP> mtu 1500 ... \    link/ether aa:bb:.. brd .."
        let mut parts = l.splitn(3, ": ");
        let (Some(_), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name).to_string();
        let flags = rest.split('>').next().unwrap_or("").trim_start_matches('<');
        let up = flags.split(',').any(|x| x == "UP");
        let promisc = flags.split(',').any(|x| x == "PROMISC");
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mtu = words
            .iter()
            .position(|w| *w == "mtu")
            .and_then(|i| words.get(i + 1))
            .and_then(|m| m.parse().ok());
        let mut kind = "unknown".to_string();
        let mut mac = None;
        if let Some(i) = words.iter().position(|w| w.starts_with("link/")) {
            let k = &words[i]["link/".len()..];
            kind = match k {
                "ether" => "ether".into(),
                "loopback" => "loopback".into(),
                other => other.into(),
            };
            if k != "loopback" && k != "none" {
                mac = words.get(i + 1).map(|m| m.to_string());
            }
        }
        ifaces.push(Iface {
            name,
            mtu,
            up,
            promisc,
            kind,
            mac,
            ..Default::default()
        });
    }
    let mut all_v4 = Vec::new();
    let mut all_v6 = Vec::new();
    for l in get("addr") {
        // "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\  valid_lft ..."
        let words: Vec<&str> = l.split_whitespace().collect();
        if words.len() < 4 {
            continue;
        }
        let dev = words[1].split('@').next().unwrap_or(words[1]);
        let Some(iface) = ifaces.iter_mut().find(|i| i.name == dev) else {
            continue;
        };
        let (addr, prefix) = words[3].split_once('/').unwrap_or((words[3], "32"));
        let field = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.trim_end_matches('\\').to_string())
        };
        match words[2] {
            "inet" => {
                let p: u32 = prefix.parse().unwrap_or(32);
                let mask = prefix_to_netmask(p);
                let network = parse_v4(addr).map(|a| {
                    let m = u32::from_be_bytes(mask);
                    dotted((u32::from_be_bytes(a) & m).to_be_bytes())
                });
                let mut m = Map::new();
                m.insert("address".into(), json!(addr));
                m.insert("broadcast".into(), json!(field("brd").unwrap_or_default()));
                m.insert("netmask".into(), json!(dotted(mask)));
                m.insert("network".into(), json!(network.unwrap_or_default()));
                m.insert("prefix".into(), json!(prefix));
                if !addr.starts_with("127.") {
                    all_v4.push(json!(addr));
                }
                iface.ipv4.push(m);
            }
            "inet6" => {
                let scope = field("scope").unwrap_or_default();
                iface
                    .ipv6
                    .push(json!({"address": addr, "prefix": prefix, "scope": scope}));
                if scope != "host" {
                    all_v6.push(json!(addr));
                }
            }
            _ => {}
        }
    }
    let names: Vec<Value> = ifaces.iter().map(|i| json!(i.name)).collect();
    f.insert("interfaces".into(), Value::Array(names));
    f.insert("all_ipv4_addresses".into(), Value::Array(all_v4));
    f.insert("all_ipv6_addresses".into(), Value::Array(all_v6));
    for i in &ifaces {
        let mut m = Map::new();
        m.insert("active".into(), json!(i.up));
        m.insert("device".into(), json!(i.name));
        if let Some(v4) = i.ipv4.first() {
            m.insert("ipv4".into(), Value::Object(v4.clone()));
        }
        if i.ipv4.len() > 1 {
            m.insert(
                "ipv4_secondaries".into(),
                Value::Array(i.ipv4[1..].iter().cloned().map(Value::Object).collect()),
            );
        }
        if !i.ipv6.is_empty() {
            m.insert("ipv6".into(), Value::Array(i.ipv6.clone()));
        }
        if let Some(mac) = &i.mac {
            m.insert("macaddress".into(), json!(mac));
        }
        if let Some(mtu) = i.mtu {
            m.insert("mtu".into(), json!(mtu));
        }
        m.insert("promisc".into(), json!(i.promisc));
        m.insert("type".into(), json!(i.kind));
        f.insert(i.name.replace('-', "_"), Value::Object(m));
    }
    // default ipv4: the route to 8.8.8.8 ("... via GW dev IFACE src ADDR ...")
    let route = get("route4").join(" ");
    let rw: Vec<&str> = route.split_whitespace().collect();
    let after = |k: &str| {
        rw.iter()
            .position(|w| *w == k)
            .and_then(|i| rw.get(i + 1))
            .map(|s| s.to_string())
    };
    let mut def = Map::new();
    if let Some(dev) = after("dev") {
        let src = after("src");
        if let Some(iface) = ifaces.iter().find(|i| i.name == dev) {
            let v4 = src
                .as_ref()
                .and_then(|s| {
                    iface
                        .ipv4
                        .iter()
                        .find(|m| m.get("address").and_then(Value::as_str) == Some(s.as_str()))
                })
                .or_else(|| iface.ipv4.first());
            if let Some(v4) = v4 {
                for (k, v) in v4 {
                    def.insert(k.clone(), v.clone());
                }
            }
            def.insert("alias".into(), json!(dev));
            if let Some(mac) = &iface.mac {
                def.insert("macaddress".into(), json!(mac));
            }
            if let Some(mtu) = iface.mtu {
                def.insert("mtu".into(), json!(mtu));
            }
            def.insert("type".into(), json!(iface.kind));
        }
        if let (Some(src), false) = (&src, def.contains_key("address")) {
            def.insert("address".into(), json!(src));
        }
        def.insert("gateway".into(), json!(after("via").unwrap_or_default()));
        def.insert("interface".into(), json!(dev));
    }
    let mut def: Vec<(String, Value)> = def.into_iter().collect();
    def.sort_by(|a, b| a.0.cmp(&b.0));
    f.insert(
        "default_ipv4".into(),
        Value::Object(def.into_iter().collect()),
    );

    // cpu
    let mut processors = 0u64;
    let mut sockets = std::collections::BTreeSet::new();
    let mut cores: Option<u64> = None;
    let mut siblings: Option<u64> = None;
    for l in get("cpuinfo") {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "processor" => processors += 1,
            "physical id" => {
                sockets.insert(v.to_string());
            }
            "cpu cores" => cores = v.parse().ok(),
            "siblings" => siblings = v.parse().ok(),
            _ => {}
        }
    }
    let count = if sockets.is_empty() {
        processors.max(1)
    } else {
        sockets.len() as u64
    };
    let cores_per = cores.unwrap_or(1);
    let threads = match (siblings, cores) {
        (Some(s), Some(c)) if c > 0 => (s / c).max(1),
        _ => 1,
    };
    let vcpus = if sockets.is_empty() {
        processors
    } else {
        // A host's numbers, not ours: a nonsense count must not overflow.
        threads.saturating_mul(cores_per).saturating_mul(count)
    };
    f.insert("processor_count".into(), json!(count));
    f.insert("processor_cores".into(), json!(cores_per));
    f.insert("processor_threads_per_core".into(), json!(threads));
    f.insert("processor_vcpus".into(), json!(vcpus));
    f.insert("processor_nproc".into(), json!(processors));

    // memory
    for l in get("meminfo") {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        let key = match k {
            "MemTotal" => "memtotal_mb",
            "MemFree" => "memfree_mb",
            "SwapTotal" => "swaptotal_mb",
            "SwapFree" => "swapfree_mb",
            _ => continue,
        };
        f.insert(key.into(), json!(kb / 1024));
    }

    // python
    let py = get("python");
    if py.len() >= 2 {
        let ver = py[1].trim().trim_start_matches("Python ").to_string();
        let nums: Vec<u64> = ver
            .split('.')
            .map(|x| {
                x.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect();
        let n = |i: usize| nums.get(i).copied().unwrap_or(0);
        f.insert("python_version".into(), json!(ver));
        f.insert("python".into(), json!({
            "executable": py[0].trim(),
            "type": "cpython",
            "version": {"major": n(0), "minor": n(1), "micro": n(2), "releaselevel": "final", "serial": 0},
            "version_info": [n(0), n(1), n(2), "final", 0],
        }));
    }

    // service manager (Ansible: /proc/1/comm unless it is init or a shell)
    let init = get("init");
    let comm = init
        .first()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let run_systemd = init.iter().any(|l| l.trim() == "run-systemd");
    let service_mgr = if comm.is_empty() || comm == "init" || comm.ends_with("sh") {
        if run_systemd {
            "systemd".to_string()
        } else {
            "sysvinit".to_string()
        }
    } else {
        comm
    };
    f.insert("service_mgr".into(), json!(service_mgr));
    let pkg = first("pkg");
    f.insert(
        "pkg_mgr".into(),
        json!(match pkg.as_str() {
            "apt-get" => "apt",
            "" => "unknown",
            other => other,
        }),
    );

    // date_time
    let date = first("date");
    let w: Vec<&str> = date.split_whitespace().collect();
    // UTC from the epoch (one `date` on the host, not two).
    let utc = w
        .get(6)
        .and_then(|e| e.parse::<i64>().ok())
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        });
    if let Some(utc) = utc.filter(|_| w.len() >= 13) {
        // `%N` is nine digits; anything else (a host's `date` is not ours) is cut at a char.
        let micro = w[12]
            .char_indices()
            .nth(6)
            .map_or(w[12], |(i, _)| &w[12][..i]);
        f.insert("date_time".into(), json!({
            "date": format!("{}-{}-{}", w[0], w[1], w[2]),
            "day": w[2], "epoch": w[6], "epoch_int": w[6], "hour": w[3],
            "iso8601": format!("{}Z", utc),
            "iso8601_basic": format!("{}{}{}T{}{}{}{}", w[0], w[1], w[2], w[3], w[4], w[5], micro),
            "iso8601_basic_short": format!("{}{}{}T{}{}{}", w[0], w[1], w[2], w[3], w[4], w[5]),
            "iso8601_micro": format!("{}.{}Z", utc, micro),
            "minute": w[4], "month": w[1], "second": w[5],
            "time": format!("{}:{}:{}", w[3], w[4], w[5]),
            "tz": w[7], "tz_dst": w[7], "tz_offset": w[8],
            "weekday": w[9], "weekday_number": w[10], "weeknumber": w[11], "year": w[0],
        }));
    }

    // env, user
    let mut env = Map::new();
    for l in get("env") {
        if let Some((k, v)) = l.split_once('=') {
            if !v.is_empty() {
                env.insert(k.to_string(), json!(v));
            }
        }
    }
    f.insert("env".into(), Value::Object(env));
    // `id`: uid=0(root) gid=0(root) groups=0(root)
    let id = first("user");
    let id_field = |key: &str| -> Option<(u64, Option<&str>)> {
        let v = id
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
        let (num, name) = match v.split_once('(') {
            Some((n, rest)) => (n, rest.strip_suffix(')')),
            None => (v, None),
        };
        Some((num.parse().ok()?, name))
    };
    if let (Some((uid, name)), Some((gid, _))) = (id_field("uid"), id_field("gid")) {
        let name = name.map_or_else(|| uid.to_string(), str::to_string);
        f.insert("user_id".into(), json!(name));
        f.insert("user_uid".into(), json!(uid));
        f.insert("user_gid".into(), json!(gid));
    }

    // virtualization (best effort)
    let virt = get("virt");
    let kv = |k: &str| {
        virt.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "none")
    };
    let (vtype, vrole) = if let Some(c) = kv("runcontainer").or_else(|| kv("container")) {
        (
            match c {
                "systemd-nspawn" => "systemd-nspawn",
                "docker" => "docker",
                "lxc" => "lxc",
                "podman" => "podman",
                other => other,
            }
            .to_string(),
            "guest",
        )
    } else if virt.iter().any(|l| l.trim() == "dockerenv") {
        ("docker".to_string(), "guest")
    } else if let Some(d) = kv("detect") {
        (d.to_string(), "guest")
    } else {
        ("NA".to_string(), "NA")
    };
    f.insert("virtualization_type".into(), json!(vtype));
    f.insert("virtualization_role".into(), json!(vrole));

    // mounts
    let mut mounts = Vec::new();
    for l in get("mounts") {
        let p: Vec<&str> = l.split('\t').collect();
        if p.len() < 6 {
            continue;
        }
        let unescape = |s: &str| {
            s.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\134", "\\")
        };
        mounts.push(json!({
            "device": unescape(p[0]), "mount": unescape(p[1]), "fstype": p[2], "options": p[3],
            "size_total": p[4].parse::<u64>().unwrap_or(0),
            "size_available": p[5].parse::<u64>().unwrap_or(0),
        }));
    }
    f.insert("mounts".into(), Value::Array(mounts));

    // prefixed copies plus ansible_facts
    let mut out = Map::new();
    for (k, v) in &f {
        out.insert(format!("ansible_{k}"), v.clone());
    }
    out.insert("ansible_facts".into(), Value::Object(f));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts")
    }

    fn run_script_here() -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(gather_script())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// Keys whose value Ansible's own setup module reported on this kind of machine must have
    /// the same JSON type in ours.
    fn same_kind(a: &Value, b: &Value) -> bool {
        std::mem::discriminant(a) == std::mem::discriminant(b)
    }

    #[test]
    fn the_stored_gather_output_parses_to_the_expected_facts() {
        let raw = std::fs::read_to_string(fixtures().join("debian12_gather.txt")).unwrap();
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("debian12_facts.json")).unwrap(),
        )
        .unwrap();
        let got = parse_host_facts(&raw).unwrap();
        assert_eq!(Value::Object(got), want);
    }

    #[test]
    fn running_the_script_on_this_debian_host_gives_ansible_shaped_facts() {
        let facts = parse_host_facts(&run_script_here()).unwrap();
        assert_eq!(facts["ansible_os_family"], "Debian");
        assert_eq!(facts["ansible_distribution"], "Debian");
        assert_eq!(facts["ansible_distribution_major_version"], "12");
        assert_eq!(facts["ansible_distribution_release"], "bookworm");
        assert_eq!(facts["ansible_lsb"]["codename"], "bookworm");
        assert_eq!(facts["ansible_pkg_mgr"], "apt");
        assert!(facts["ansible_processor_vcpus"].as_u64().unwrap() >= 1);
        assert!(facts["ansible_memtotal_mb"].as_u64().unwrap() > 0);
        assert!(facts["ansible_interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "lo"));
        assert_eq!(facts["ansible_lo"]["ipv4"]["address"], "127.0.0.1");
        assert_eq!(facts["ansible_lo"]["ipv4"]["netmask"], "255.0.0.0");
        assert_eq!(
            facts["ansible_facts"]["os_family"],
            facts["ansible_os_family"]
        );
        assert!(facts["ansible_mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mount"] == "/"));
        // shapes match what ansible 2.14's setup module produced on this machine
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("ansible_setup_2.14.json")).unwrap(),
        )
        .unwrap();
        for (k, v) in reference.as_object().unwrap() {
            if k.starts_with('_') || !facts.contains_key(k) {
                continue;
            }
            assert!(
                same_kind(v, &facts[k]),
                "{k}: ansible {v} vs ours {}",
                facts[k]
            );
        }
        for k in ["ansible_default_ipv4", "ansible_lsb", "ansible_python"] {
            let theirs = reference[k].as_object().unwrap();
            let ours = facts[k].as_object().unwrap();
            for key in ours.keys() {
                assert!(theirs.contains_key(key), "{k}.{key} is not an Ansible key");
            }
        }
    }

    #[test]
    fn incomplete_output_is_an_error() {
        assert!(parse_host_facts("===nodename===\nx\n").is_err());
    }
}
