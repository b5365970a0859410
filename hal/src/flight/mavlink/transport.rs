//! The link: its connection, the supervisor that reopens it, our HEARTBEAT, and the telemetry
//! requests made on each new connection.

use super::*;

/// An open link. Network links use the `mavlink` crate's connections. Serial links are opened
/// here: the crate's serial reader retries every I/O error but end-of-file inside `recv`, so an
/// unplugged USB adapter (EIO) would keep it spinning until the heartbeat timeout; ours returns
/// the first I/O error, and the supervisor reopens the device.
pub(super) struct Conn {
    io: Io,
    /// The flight recorder's tap: every frame both ways passes here.
    tap: Option<Arc<Tap>>,
}

enum Io {
    Net(mavlink::AsyncConnection<MavMessage>),
    Serial {
        reader: tokio::sync::Mutex<
            mavlink::AsyncMavlinkReader<tokio::io::ReadHalf<tokio_serial::SerialStream>>,
        >,
        writer: tokio::sync::Mutex<tokio::io::WriteHalf<tokio_serial::SerialStream>>,
    },
}

/// The flight recorder on the link (`MavlinkFc::start_with`). Frames are re-encoded as
/// MAVLink 2 from what was decoded (the `mavlink` crate's connections hand out messages, not
/// bytes): the same messages, headers and sequence numbers, which is what a `.tlog` reader needs.
pub(super) struct Tap {
    recorder: Mutex<crate::flight::tlog::FlightRecorder>,
    snapshot: watch::Receiver<FcSnapshot>,
}

impl Tap {
    pub(super) fn new(
        cfg: crate::flight::tlog::RecorderConfig,
        snapshot: watch::Receiver<FcSnapshot>,
    ) -> Self {
        Self {
            recorder: Mutex::new(crate::flight::tlog::FlightRecorder::new(cfg)),
            snapshot,
        }
    }

    fn record(&self, header: &MavHeader, msg: &MavMessage) {
        use crate::flight::tlog::RecorderEvent as E;
        let armed = self.snapshot.borrow().armed;
        let mut frame = Vec::with_capacity(280);
        if mavlink::write_v2_msg(&mut frame, *header, msg).is_err() {
            return;
        }
        // never fatal: a disk that refuses is said once per flight, and the link goes on
        for event in lock(&self.recorder).frame(SystemTime::now(), armed, &frame) {
            match event {
                E::Started(path) => info!(path = %path.display(), "flight log started"),
                E::Finished { path, bytes } => {
                    info!(path = %path.display(), bytes, "flight log finished")
                }
                E::Failed { path, reason } => {
                    warn!(path = %path.display(), reason, "flight log not recorded: the flight goes on")
                }
                E::Deleted(path) => {
                    info!(path = %path.display(), "old flight log deleted for room")
                }
            }
        }
    }

    /// Closes the log in progress (the link is dropped): what it holds stays on disk.
    pub(super) fn close(&self) {
        if let Some(crate::flight::tlog::RecorderEvent::Finished { path, bytes }) =
            lock(&self.recorder).close()
        {
            info!(path = %path.display(), bytes, "flight log closed");
        }
    }
}

impl Conn {
    pub(super) async fn open(c: &ConnectionString, tap: Option<Arc<Tap>>) -> std::io::Result<Conn> {
        Ok(Conn {
            io: Io::open(c).await?,
            tap,
        })
    }

    pub(super) async fn recv(
        &self,
    ) -> Result<(MavHeader, MavMessage), mavlink::error::MessageReadError> {
        let r = self.io.recv().await;
        if let (Some(tap), Ok((header, msg))) = (&self.tap, &r) {
            tap.record(header, msg);
        }
        r
    }

    pub(super) async fn send(
        &self,
        header: &MavHeader,
        msg: &MavMessage,
    ) -> Result<(), mavlink::error::MessageWriteError> {
        let r = self.io.send(header, msg).await;
        if let (Some(tap), Ok(())) = (&self.tap, &r) {
            tap.record(header, msg);
        }
        r
    }
}

impl Io {
    async fn open(c: &ConnectionString) -> std::io::Result<Io> {
        match c {
            ConnectionString::Serial { device, baud } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(device, *baud)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(tokio_serial::Parity::None)
                    .stop_bits(tokio_serial::StopBits::One)
                    .flow_control(tokio_serial::FlowControl::None)
                    .open_native_async()?;
                let (r, w) = tokio::io::split(port);
                Ok(Io::Serial {
                    reader: tokio::sync::Mutex::new(mavlink::AsyncMavlinkReader::new(r)),
                    writer: tokio::sync::Mutex::new(w),
                })
            }
            other => Ok(Io::Net(
                mavlink::connect_async::<MavMessage>(&other.to_mavlink_address()).await?,
            )),
        }
    }

    async fn recv(&self) -> Result<(MavHeader, MavMessage), mavlink::error::MessageReadError> {
        match self {
            Io::Net(c) => c.recv().await,
            Io::Serial { reader, .. } => reader.lock().await.read_any_message().await,
        }
    }

    async fn send(
        &self,
        header: &MavHeader,
        msg: &MavMessage,
    ) -> Result<(), mavlink::error::MessageWriteError> {
        match self {
            Io::Net(c) => c.send(header, msg).await.map(|_| ()),
            Io::Serial { writer, .. } => {
                let mut frame = Vec::with_capacity(280);
                mavlink::write_v2_msg(&mut frame, *header, msg)?;
                writer
                    .lock()
                    .await
                    .write_all(&frame)
                    .await
                    .map_err(mavlink::error::MessageWriteError::Io)
            }
        }
    }
}

pub(super) async fn supervise(shared: Arc<Shared>) {
    loop {
        debug!("opening link");
        let tap = lock(&shared.tap).clone();
        let conn = match Conn::open(&shared.cfg.connection, tap).await {
            Ok(c) => Arc::new(c),
            Err(error) => {
                warn!(%error, "cannot open flight-controller link; retrying");
                tokio::time::sleep(shared.cfg.reopen_interval()).await;
                continue;
            }
        };
        info!("link open, waiting for the autopilot's HEARTBEAT");
        *lock(&shared.conn) = Some(conn.clone());
        // aborted when this connection ends, and also when the supervisor itself is aborted (the
        // MavlinkFc dropped): a bare JoinHandle would leave the task beating forever
        let heartbeat = AbortOnDrop(tokio::spawn(
            send_heartbeats(shared.clone(), conn.clone()).in_current_span(),
        ));
        let routed = shared.router.clone().map(|router| {
            AbortOnDrop(tokio::spawn(
                forward_routed(router, conn.clone()).in_current_span(),
            ))
        });
        let reason = super::receive::receive(&shared, &conn).await;
        drop((heartbeat, routed));
        *lock(&shared.conn) = None;
        drop(conn);
        shared.mark_lost(&reason);
        tokio::time::sleep(shared.cfg.reopen_interval()).await;
    }
}

/// Sends the ground stations' frames the router queued for the autopilot, with their own ids.
async fn forward_routed(router: Arc<crate::flight::router::Router>, conn: Arc<Conn>) {
    let mut queue = router.autopilot_queue().await;
    while let Some((header, msg)) = queue.recv().await {
        if let Err(error) = conn.send(&header, &msg).await {
            debug!(%error, "routed frame not sent");
        }
    }
}

pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn send_heartbeats(shared: Arc<Shared>, conn: Arc<Conn>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mavtype = match shared.cfg.heartbeat_type {
        HeartbeatType::OnboardController => apm::MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        HeartbeatType::Gcs => apm::MavType::MAV_TYPE_GCS,
    };
    let msg = MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype,
        autopilot: apm::MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: apm::MavModeFlag::empty(),
        system_status: apm::MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    });
    loop {
        tick.tick().await;
        // On udpin nothing goes out until the autopilot has sent us a packet: that is expected.
        if let Err(error) = shared.send_on(&conn, &msg).await {
            debug!(%error, "heartbeat not sent");
        }
    }
}

pub(super) async fn request_telemetry(shared: Arc<Shared>) {
    // home first: a re-attach in flight needs it for the next go-to (PX4 takes AMSL altitudes),
    // and nine set-up commands before it once made a re-issued go-to fail "home not known yet"
    if let Err(error) = shared.request_home().await {
        debug!(%error, "HOME_POSITION request not acknowledged");
    }
    let t = shared.cfg.telemetry;
    // each autopilot reports its position estimate in its own message
    let (id, name) = Ways::of(shared.snapshot.borrow().autopilot).estimator_message();
    let estimator = (id, t.status_hz, name);
    let wanted: [(u32, f64, &str); 9] = [
        (
            apm::GLOBAL_POSITION_INT_DATA::ID_U32,
            t.position_hz,
            "GLOBAL_POSITION_INT",
        ),
        (apm::ATTITUDE_DATA::ID_U32, t.attitude_hz, "ATTITUDE"),
        (
            apm::BATTERY_STATUS_DATA::ID_U32,
            t.battery_hz,
            "BATTERY_STATUS",
        ),
        (apm::GPS_RAW_INT_DATA::ID_U32, t.gps_hz, "GPS_RAW_INT"),
        (apm::SYS_STATUS_DATA::ID_U32, t.status_hz, "SYS_STATUS"),
        (
            apm::EXTENDED_SYS_STATE_DATA::ID_U32,
            t.status_hz,
            "EXTENDED_SYS_STATE",
        ),
        (
            apm::SERVO_OUTPUT_RAW_DATA::ID_U32,
            t.servo_hz,
            "SERVO_OUTPUT_RAW",
        ),
        (
            apm::MISSION_CURRENT_DATA::ID_U32,
            t.status_hz,
            "MISSION_CURRENT",
        ),
        estimator,
    ];
    for (id, hz, name) in wanted {
        if hz <= 0.0 {
            continue;
        }
        let interval_us = (1e6 / hz) as f32;
        let r = shared
            .command(
                "MAV_CMD_SET_MESSAGE_INTERVAL",
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [id as f32, interval_us, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await;
        match r {
            Ok(()) => debug!(message = name, hz, "message rate set"),
            Err(error) => warn!(message = name, hz, %error, "message rate not set"),
        }
    }
    // PX4 sends HOME_POSITION only when asked (or when home changes): before its first fix there
    // is none to send, so keep asking, backing off, until home is known or the link drops. The
    // autopilot sets home at its first fix: then ask at once and start the backoff over, so that a
    // task soon after the fix finds home known without asking again itself.
    let mut had_fix = shared.snapshot.borrow().gps_fix.is_3d();
    let mut wait = HOME_FIRST_WAIT;
    let mut attempts = 0;
    while attempts < HOME_REQUESTS {
        if shared.snapshot.borrow().home.is_some() {
            return;
        }
        let mut link = shared.link_up.subscribe();
        let mut snap = shared.snapshot.subscribe();
        let first_fix = async {
            if had_fix {
                std::future::pending::<()>().await;
            }
            let _ = snap.wait_for(|s| s.gps_fix.is_3d()).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                wait = (wait * 2).min(HOME_MAX_WAIT);
                attempts += 1;
            }
            _ = first_fix => {
                had_fix = true;
                wait = HOME_FIRST_WAIT;
                attempts = 0;
            }
            _ = link.wait_for(|up| !up) => return,
        }
        if shared.snapshot.borrow().home.is_none() {
            if let Err(error) = shared.request_home().await {
                debug!(%error, "HOME_POSITION request not acknowledged");
            }
        }
    }
    if shared.snapshot.borrow().home.is_none() {
        warn!(
            attempts = HOME_REQUESTS,
            "the autopilot has not sent its home position"
        );
    }
}

/// The home-request backoff: first wait, doubled up to the last.
pub(super) const HOME_FIRST_WAIT: Duration = Duration::from_millis(500);
pub(super) const HOME_MAX_WAIT: Duration = Duration::from_secs(5);

/// How many times a connection asks for HOME_POSITION (counted again from its first GPS fix)
/// before only the pre-flight check says so.
pub(super) const HOME_REQUESTS: u32 = 40;

/// Message ids as u32 (the generated `ID` constants).
pub(super) trait IdU32 {
    const ID_U32: u32;
}
impl<T: mavlink::MessageData> IdU32 for T {
    const ID_U32: u32 = T::ID;
}

impl Shared {
    /// Sends one of our own messages on `conn`; the router (if any) sees it first, as the
    /// agent's link's traffic.
    pub(super) async fn send_on(
        &self,
        conn: &Conn,
        msg: &MavMessage,
    ) -> Result<(), mavlink::error::MessageWriteError> {
        let header = self.header();
        if let Some(router) = &self.router {
            router.from_agent(&header, msg);
        }
        conn.send(&header, msg).await
    }

    pub(super) fn header(&self) -> MavHeader {
        MavHeader {
            system_id: u32::from(self.cfg.system_id),
            component_id: self.cfg.component_id,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(super) fn target(&self) -> Option<(u8, u8)> {
        let s = self.snapshot.borrow();
        if s.link.is_connected() {
            s.target
        } else {
            None
        }
    }

    pub(super) fn mark_lost(&self, reason: &str) {
        let now = SystemTime::now();
        let mut was_connected = false;
        // when the last HEARTBEAT really arrived (not "a timeout ago": a test of the timeout
        // must be able to see a loss declared early)
        let last = lock(&self.state).last_heartbeat.unwrap_or(now);
        self.snapshot.send_modify(|s| {
            s.at = now;
            match s.link {
                LinkState::Connected { .. } => {
                    was_connected = true;
                    s.link = LinkState::Lost {
                        since: now,
                        last_heartbeat: last,
                    };
                }
                LinkState::NeverConnected | LinkState::Lost { .. } => {}
            }
        });
        self.link_up.send_replace(false);
        if was_connected {
            warn!(reason, "flight-controller link lost; reopening");
        } else {
            debug!(reason, "link reopened without an autopilot");
        }
    }
}
