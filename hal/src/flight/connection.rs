//! Connection strings as the autopilots' own tools write them (MAVProxy, QGroundControl, MAVSDK):
//! `udpin:HOST:PORT`, `udpout:HOST:PORT`, `tcpin:HOST:PORT`, `tcpout:HOST:PORT`, `serial:DEVICE:BAUD`.
//!
//! Parsing is strict and happens at config load, so a typo is reported with the whole string and
//! what was expected, instead of surfacing as a socket error minutes later.

use std::fmt;
use std::str::FromStr;

/// A parsed MAVLink connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionString {
    /// Listen on a UDP port; the peer is whoever sends first (PX4 SITL's API link sends to 14540).
    UdpIn { host: String, port: u16 },
    /// Send to a UDP address from an ephemeral port.
    UdpOut { host: String, port: u16 },
    /// Accept one TCP client.
    TcpIn { host: String, port: u16 },
    /// Connect to a TCP server (ArduPilot SITL's 5760).
    TcpOut { host: String, port: u16 },
    /// A serial device (prefer `/dev/serial/by-id/…`: the name survives re-plugging).
    Serial { device: String, baud: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string `{input}`: unknown scheme `{scheme}`; expected one of udpin, udpout, tcpin, tcpout, serial (e.g. udpin:0.0.0.0:14540, tcpout:127.0.0.1:5760, serial:/dev/ttyAMA0:921600)")]
    UnknownScheme { input: String, scheme: String },
    #[error(
        "connection string `{input}`: missing `:`; expected SCHEME:HOST:PORT or serial:DEVICE:BAUD"
    )]
    MissingScheme { input: String },
    #[error(
        "connection string `{input}`: expected {scheme}:HOST:PORT (e.g. {scheme}:127.0.0.1:14540)"
    )]
    MissingPort { input: String, scheme: String },
    #[error("connection string `{input}`: empty host")]
    EmptyHost { input: String },
    #[error("connection string `{input}`: port `{port}` is not a number from 1 to 65535")]
    BadPort { input: String, port: String },
    #[error("connection string `{input}`: expected serial:DEVICE:BAUD (e.g. serial:/dev/ttyAMA0:921600)")]
    MissingBaud { input: String },
    #[error("connection string `{input}`: baud rate `{baud}` is not a positive number")]
    BadBaud { input: String, baud: String },
    #[error("connection string `{input}`: empty serial device")]
    EmptyDevice { input: String },
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input_owned = || input.to_owned();
        let (scheme, rest) =
            input
                .split_once(':')
                .ok_or_else(|| ConnectionStringError::MissingScheme {
                    input: input_owned(),
                })?;
        let scheme_lc = scheme.to_ascii_lowercase();
        match scheme_lc.as_str() {
            "udpin" | "udpout" | "tcpin" | "tcpout" => {
                // rsplit: an IPv6 host ([::]:14540) keeps its colons
                let (host, port) =
                    rest.rsplit_once(':')
                        .ok_or_else(|| ConnectionStringError::MissingPort {
                            input: input_owned(),
                            scheme: scheme_lc.clone(),
                        })?;
                if host.is_empty() {
                    return Err(ConnectionStringError::EmptyHost {
                        input: input_owned(),
                    });
                }
                let port = match port.parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => {
                        return Err(ConnectionStringError::BadPort {
                            input: input_owned(),
                            port: port.to_owned(),
                        })
                    }
                };
                let host = host.to_owned();
                Ok(match scheme_lc.as_str() {
                    "udpin" => ConnectionString::UdpIn { host, port },
                    "udpout" => ConnectionString::UdpOut { host, port },
                    "tcpin" => ConnectionString::TcpIn { host, port },
                    _ => ConnectionString::TcpOut { host, port },
                })
            }
            "serial" => {
                let (device, baud) =
                    rest.rsplit_once(':')
                        .ok_or_else(|| ConnectionStringError::MissingBaud {
                            input: input_owned(),
                        })?;
                if device.is_empty() {
                    return Err(ConnectionStringError::EmptyDevice {
                        input: input_owned(),
                    });
                }
                let baud = match baud.parse::<u32>() {
                    Ok(b) if b > 0 => b,
                    _ => {
                        return Err(ConnectionStringError::BadBaud {
                            input: input_owned(),
                            baud: baud.to_owned(),
                        })
                    }
                };
                Ok(ConnectionString::Serial {
                    device: device.to_owned(),
                    baud,
                })
            }
            _ => Err(ConnectionStringError::UnknownScheme {
                input: input_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionString::UdpIn { host, port } => write!(f, "udpin:{host}:{port}"),
            ConnectionString::UdpOut { host, port } => write!(f, "udpout:{host}:{port}"),
            ConnectionString::TcpIn { host, port } => write!(f, "tcpin:{host}:{port}"),
            ConnectionString::TcpOut { host, port } => write!(f, "tcpout:{host}:{port}"),
            ConnectionString::Serial { device, baud } => write!(f, "serial:{device}:{baud}"),
        }
    }
}

impl ConnectionString {
    /// The address string the `mavlink` crate's `connect_async` takes (its schemes match the
    /// tools' today; this is the one place to change if they ever diverge).
    pub fn to_mavlink_address(&self) -> String {
        self.to_string()
    }

    /// True for transports where the peer must speak first before we can send (udpin, tcpin).
    pub fn waits_for_peer(&self) -> bool {
        matches!(
            self,
            ConnectionString::UdpIn { .. } | ConnectionString::TcpIn { .. }
        )
    }
}

impl<'de> serde::Deserialize<'de> for ConnectionString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ConnectionString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "udpin:0.0.0.0:14540".parse::<ConnectionString>().unwrap(),
            ConnectionString::UdpIn {
                host: "0.0.0.0".into(),
                port: 14540
            }
        );
        assert_eq!(
            "tcpout:127.0.0.1:5760".parse::<ConnectionString>().unwrap(),
            ConnectionString::TcpOut {
                host: "127.0.0.1".into(),
                port: 5760
            }
        );
        assert_eq!(
            "udpout:10.0.0.2:14550".parse::<ConnectionString>().unwrap(),
            ConnectionString::UdpOut {
                host: "10.0.0.2".into(),
                port: 14550
            }
        );
        assert_eq!(
            "tcpin:0.0.0.0:5760".parse::<ConnectionString>().unwrap(),
            ConnectionString::TcpIn {
                host: "0.0.0.0".into(),
                port: 5760
            }
        );
        assert_eq!(
            "serial:/dev/serial/by-id/usb-Holybro_Pixhawk-if00:921600"
                .parse::<ConnectionString>()
                .unwrap(),
            ConnectionString::Serial {
                device: "/dev/serial/by-id/usb-Holybro_Pixhawk-if00".into(),
                baud: 921600
            }
        );
    }

    #[test]
    fn round_trips_through_display() {
        for s in [
            "udpin:0.0.0.0:14540",
            "udpout:127.0.0.1:14550",
            "tcpin:[::]:5760",
            "tcpout:127.0.0.1:5760",
            "serial:/dev/ttyAMA0:921600",
        ] {
            assert_eq!(s.parse::<ConnectionString>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = "udp:1.2.3.4:5".parse::<ConnectionString>().unwrap_err();
        assert!(matches!(e, ConnectionStringError::UnknownScheme { .. }));
        assert!(e.to_string().contains("udpin"), "{e}");
        assert!(matches!(
            "localhost".parse::<ConnectionString>().unwrap_err(),
            ConnectionStringError::MissingScheme { .. }
        ));
        assert!(matches!(
            "udpin:14540".parse::<ConnectionString>().unwrap_err(),
            ConnectionStringError::EmptyHost { .. } | ConnectionStringError::MissingPort { .. }
        ));
        assert!(matches!(
            "tcpout:127.0.0.1:port"
                .parse::<ConnectionString>()
                .unwrap_err(),
            ConnectionStringError::BadPort { .. }
        ));
        assert!(matches!(
            "tcpout:127.0.0.1:0"
                .parse::<ConnectionString>()
                .unwrap_err(),
            ConnectionStringError::BadPort { .. }
        ));
        assert!(matches!(
            "serial:/dev/ttyUSB0"
                .parse::<ConnectionString>()
                .unwrap_err(),
            ConnectionStringError::BadBaud { .. } | ConnectionStringError::MissingBaud { .. }
        ));
        assert!(matches!(
            "serial:/dev/ttyUSB0:fast"
                .parse::<ConnectionString>()
                .unwrap_err(),
            ConnectionStringError::BadBaud { .. }
        ));
        assert!(matches!(
            "serial::57600".parse::<ConnectionString>().unwrap_err(),
            ConnectionStringError::EmptyDevice { .. }
        ));
    }
}
