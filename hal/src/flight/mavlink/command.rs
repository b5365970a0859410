//! The MAVLink command protocol (resends with `confirmation`, IN_PROGRESS, each result its own
//! [`FcError`]) and mode changes.

use super::*;

impl Shared {
    pub(super) async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&FcSnapshot) -> bool,
    ) -> Option<FcSnapshot> {
        let mut rx = self.snapshot.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Some(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    pub(super) async fn send(
        &self,
        command: &'static str,
        msg: &MavMessage,
    ) -> Result<(), FcError> {
        let conn = lock(&self.conn).clone();
        let Some(conn) = conn else {
            return Err(FcError::LinkLost { command });
        };
        self.send_on(&conn, msg).await.map_err(|error| {
            warn!(command, %error, "send failed");
            FcError::LinkLost { command }
        })?;
        Ok(())
    }

    pub(super) fn status_text_since(&self, since: Instant) -> Option<String> {
        lock(&self.state)
            .last_status_text
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, t)| t.clone())
    }

    pub(super) fn command_lock(&self, cmd: MavCmd) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.command_locks)
            .entry(cmd as u32)
            .or_default()
            .clone()
    }

    /// COMMAND_LONG with the full command protocol.
    pub(super) async fn command(
        &self,
        name: &'static str,
        cmd: MavCmd,
        p: [f32; 7],
    ) -> Result<(), FcError> {
        self.run_command(name, cmd, |target, confirmation| {
            MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
                param1: p[0],
                param2: p[1],
                param3: p[2],
                param4: p[3],
                param5: p[4],
                param6: p[5],
                param7: p[6],
                command: cmd,
                target_system: target.0,
                target_component: target.1,
                confirmation,
            })
        })
        .await
    }

    /// COMMAND_INT (positions as 1e7 degrees: no float32 rounding of coordinates). It has no
    /// confirmation field; resends are identical.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn command_int(
        &self,
        name: &'static str,
        cmd: MavCmd,
        frame: apm::MavFrame,
        p: [f32; 4],
        x: i32,
        y: i32,
        z: f32,
    ) -> Result<(), FcError> {
        self.run_command(name, cmd, |target, _| {
            MavMessage::COMMAND_INT(apm::COMMAND_INT_DATA {
                param1: p[0],
                param2: p[1],
                param3: p[2],
                param4: p[3],
                x,
                y,
                z,
                command: cmd,
                target_system: target.0,
                target_component: target.1,
                frame,
                current: 0,
                autocontinue: 0,
            })
        })
        .await
    }

    pub(super) async fn run_command(
        &self,
        name: &'static str,
        cmd: MavCmd,
        build: impl Fn((u8, u8), u8) -> MavMessage,
    ) -> Result<(), FcError> {
        let lock = self.command_lock(cmd);
        let _one_at_a_time = lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost { command: name })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let started = Instant::now();
        let attempts = self.cfg.command_retries + 1;
        let mut in_progress = false;
        let mut sent = 0u32;
        while sent < attempts {
            if !in_progress {
                let confirmation = u8::try_from(sent).unwrap_or(u8::MAX);
                self.send(name, &build(target, confirmation)).await?;
                sent += 1;
                debug!(command = name, confirmation, "command sent");
            }
            let wait = if in_progress {
                self.cfg.in_progress_timeout()
            } else {
                self.cfg.command_timeout()
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    r = replies.recv() => {
                        let reply = match r {
                            Ok(reply) => reply,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                warn!(command = name, skipped = n, "reply queue overflowed");
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                return Err(FcError::Cancelled { command: name });
                            }
                        };
                        let MavMessage::COMMAND_ACK(ack) = &reply.1 else { continue };
                        if ack.command != cmd {
                            continue;
                        }
                        let reason = || self.status_text_since(started);
                        match ack.result {
                            MavResult::MAV_RESULT_ACCEPTED => {
                                debug!(command = name, elapsed = ?started.elapsed(), "accepted");
                                return Ok(());
                            }
                            MavResult::MAV_RESULT_IN_PROGRESS => {
                                debug!(command = name, "in progress");
                                if !in_progress {
                                    in_progress = true;
                                    break;
                                }
                                continue;
                            }
                            MavResult::MAV_RESULT_TEMPORARILY_REJECTED => {
                                return Err(FcError::TemporarilyRejected { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_DENIED => {
                                return Err(FcError::Denied { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_UNSUPPORTED => {
                                return Err(FcError::Unsupported { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_CANCELLED => {
                                return Err(FcError::Cancelled { command: name });
                            }
                            MavResult::MAV_RESULT_COMMAND_INT_ONLY | MavResult::MAV_RESULT_COMMAND_LONG_ONLY => {
                                return Err(FcError::Unsupported { command: name, reason: Some(format!("{:?}", ack.result)) });
                            }
                            other => {
                                return Err(FcError::Failed {
                                    command: name,
                                    reason: reason().or_else(|| Some(format!("{other:?}"))),
                                });
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        if in_progress {
                            return Err(FcError::Timeout { command: name, attempts: sent, after: started.elapsed() });
                        }
                        debug!(command = name, attempt = sent, "no COMMAND_ACK; resending");
                        break;
                    }
                    r = link.changed() => {
                        if r.is_err() || !*link.borrow() {
                            return Err(FcError::LinkLost { command: name });
                        }
                    }
                }
            }
        }
        Err(FcError::Timeout {
            command: name,
            attempts: sent,
            after: started.elapsed(),
        })
    }

    pub(super) async fn set_mode(
        &self,
        name: &'static str,
        kind: FlightModeKind,
    ) -> Result<(), FcError> {
        let (autopilot, current) = {
            let s = self.snapshot.borrow();
            if !s.link.is_connected() {
                return Err(FcError::LinkLost { command: name });
            }
            (s.autopilot, s.mode.clone())
        };
        if modes::reached(autopilot, &current, kind) {
            return Ok(());
        }
        let (p2, p3) = modes::encode(autopilot, kind).ok_or_else(|| FcError::Unsupported {
            command: name,
            reason: Some(format!("{autopilot:?} has no {kind:?} mode")),
        })?;
        self.expect_mode(kind);
        let custom_mode_enabled = apm::MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED.bits() as f32;
        self.command(
            name,
            MavCmd::MAV_CMD_DO_SET_MODE,
            [custom_mode_enabled, p2, p3, 0.0, 0.0, 0.0, 0.0],
        )
        .await?;
        let started = Instant::now();
        match self
            .wait_for(self.cfg.mode_change_timeout(), |s| {
                modes::reached(autopilot, &s.mode, kind) || !s.link.is_connected()
            })
            .await
        {
            Some(s) if s.link.is_connected() => Ok(()),
            Some(_) => Err(FcError::LinkLost { command: name }),
            None => Err(FcError::Failed {
                command: name,
                reason: Some(self.status_text_since(started).unwrap_or_else(|| {
                    format!(
                        "accepted, but HEARTBEAT still shows {}",
                        self.snapshot.borrow().mode.raw
                    )
                })),
            }),
        }
    }

    /// Notes that this link is about to cause a change to `kind`: the HEARTBEAT showing it is then
    /// not reported as the autopilot's own decision.
    pub(super) fn expect_mode(&self, kind: FlightModeKind) {
        lock(&self.state).requested_mode = Some(kind);
    }

    /// Runs one motion operation (take-off, go-to, hold, ...). If a newer one started while it
    /// ran, its result is stale (the vehicle is already doing something else): `Cancelled`.
    pub(super) async fn motion<T>(
        &self,
        name: &'static str,
        op: impl Future<Output = Result<T, FcError>>,
    ) -> Result<T, FcError> {
        let mine = self.motion_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let result = op.await;
        if self.motion_generation.load(Ordering::SeqCst) != mine {
            debug!(command = name, stale = ?result.as_ref().err(), "superseded by a newer operation");
            return Err(FcError::Cancelled { command: name });
        }
        result
    }

    pub(super) fn autopilot(&self, command: &'static str) -> Result<Autopilot, FcError> {
        let s = self.snapshot.borrow();
        if !s.link.is_connected() {
            return Err(FcError::LinkLost { command });
        }
        Ok(s.autopilot)
    }

    /// Asks for HOME_POSITION (`MAV_CMD_REQUEST_MESSAGE`); PX4 sends it only when asked or on
    /// change.
    pub(super) async fn request_home(&self) -> Result<(), FcError> {
        self.command(
            "MAV_CMD_REQUEST_MESSAGE(HOME_POSITION)",
            MavCmd::MAV_CMD_REQUEST_MESSAGE,
            [
                apm::HOME_POSITION_DATA::ID_U32 as f32,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        )
        .await
    }

    /// Home's altitude AMSL; if home is not known yet, asks for it and waits up to the mode-change
    /// timeout (a re-attached link may not have it yet).
    pub(super) async fn home_msl(&self, command: &'static str) -> Result<f64, FcError> {
        if let Some(h) = self.snapshot.borrow().home {
            return Ok(h.alt_msl_m);
        }
        if let Err(error) = self.request_home().await {
            debug!(%error, "HOME_POSITION request not acknowledged");
        }
        self.wait_for(self.cfg.mode_change_timeout(), |s| s.home.is_some())
            .await
            .and_then(|s| s.home)
            .map(|h| h.alt_msl_m)
            .ok_or_else(|| FcError::Failed {
                command,
                reason: Some("home position not known yet".into()),
            })
    }
}

pub(super) fn deg_e7(deg: f64) -> i32 {
    (deg * 1e7).round() as i32
}

pub(super) fn check_point(command: &'static str, p: &GeoPoint) -> Result<(), FcError> {
    if !(-90.0..=90.0).contains(&p.lat_deg) || !(-180.0..=180.0).contains(&p.lon_deg) {
        return Err(FcError::InvalidArgument {
            command,
            reason: format!(
                "({}, {}) is not a WGS-84 latitude/longitude",
                p.lat_deg, p.lon_deg
            ),
        });
    }
    if !p.alt_rel_m.is_finite() || p.alt_rel_m < 0.0 {
        return Err(FcError::InvalidArgument {
            command,
            reason: format!("altitude {} m above home must be 0 or more", p.alt_rel_m),
        });
    }
    Ok(())
}
