//! The coordinator's phase logic for a move (SWITCH → SEALED → DRAIN → COMPLETE), as a pure
//! function of the migration's recorded phase and what the coordinator observes: the topic's
//! marker in the configuration (the source of truth of a move), the clients' reports and the
//! source cluster. The coordinator ([`super::Coordinator`]) gathers the observations, calls
//! [`step`] and carries the action out; [`super::model`] explores the same function against
//! crashes, lost acknowledgements, stale producers, late writes and offline groups.
//!
//! Every action is idempotent against the coordinator's own earlier write: a crash or a lost
//! acknowledgement after a configuration write leaves the record behind the configuration, and
//! the next step (or [`resume_phase`] for a record that is missing or finished) takes the
//! configuration's word for it.

use switchyard_proto::v1::MigrationPhase;

/// The topic as the configuration has it now, seen from one migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Marker {
    /// Routed to the destination and marked as moving from the source; `sealed` once the seal
    /// is published there.
    Moving { sealed: Option<Vec<i64>> },
    /// Routed to the destination without a marker: this move's completion was written.
    Done,
    /// Routed back to the source with this migration's abort marker; `held` while producers
    /// are told to hold their sends (until the copy-back is done).
    Aborting { held: bool },
    /// Routed to the source without a marker: this migration's abort was cleared (or the move
    /// never left the source).
    Back,
    /// Deleted, or routed or marked by something other than this migration.
    Elsewhere,
}

/// What the coordinator observes before a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub marker: Marker,
    /// Every live client has reported since the service started.
    pub settled: bool,
    /// Every live producer of the topic reports the destination.
    pub producers_switched: bool,
    /// Some client of the topic has not applied the move's version yet.
    pub clients_behind: bool,
    /// Every consumer group (reporting, or with committed offsets on the source) has drained
    /// the source up to the seal or was released; `None` until the source cluster was read.
    pub groups_drained: Option<bool>,
    /// Every record past the seal that the source holds is copied to the destination.
    pub late_writes_copied: bool,
    /// An operator forces the move on (`--advance`).
    pub forced: bool,
}

/// What the coordinator does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing yet, for this reason.
    Wait(&'static str),
    /// Publish the seal on the topic, then record SEALED: `reuse` is the seal the topic
    /// already carries (a published seal never moves); `None`: read the source's end offsets.
    Seal { reuse: Option<Vec<i64>> },
    /// Record this phase; no configuration write.
    Record(MigrationPhase),
    /// Clear the topic's marker, then record COMPLETE.
    Complete,
    /// The topic was changed outside the migration: record ABORTED with this note.
    Abandon(&'static str),
}

/// The next action of a move in `phase` (SWITCH, SEALED or DRAIN; other phases wait).
pub fn step(phase: MigrationPhase, o: &Observed) -> Action {
    use MigrationPhase as P;
    match (phase, &o.marker) {
        (P::Switch, Marker::Moving { sealed: Some(s) }) => Action::Seal {
            reuse: Some(s.clone()),
        },
        (P::Switch, Marker::Moving { sealed: None }) => {
            if o.forced {
                Action::Seal { reuse: None }
            } else if !o.settled {
                Action::Wait("waiting for clients to report after the service started")
            } else if o.producers_switched && !o.clients_behind {
                Action::Seal { reuse: None }
            } else {
                // The progress shows which producers.
                Action::Wait("")
            }
        }
        // This migration's abort was written (routed back with its marker) and its record lost.
        (P::Switch, Marker::Aborting { .. }) => Action::Record(P::Aborting),
        // The completion of this migration cannot precede its seal; anything else was done
        // outside it.
        (P::Switch, _) => Action::Abandon("the topic was re-routed outside the migration"),
        (P::Sealed, Marker::Moving { sealed: Some(_) }) => Action::Record(P::Drain),
        (P::Sealed | P::Drain, Marker::Moving { sealed: None }) => {
            // The record is ahead of the configuration (not a state this coordinator writes):
            // publish the seal again from the source.
            Action::Seal { reuse: None }
        }
        (P::Sealed | P::Drain, Marker::Done) => Action::Record(P::Complete),
        (P::Drain, Marker::Moving { sealed: Some(_) }) => {
            if o.forced {
                // Late writes are still copied after COMPLETE, while the source is watched.
                Action::Complete
            } else if !o.settled {
                Action::Wait("waiting for clients to report after the service started")
            } else if o.groups_drained.is_none() {
                Action::Wait("looking for consumer groups with committed offsets on the source")
            } else if o.groups_drained != Some(true) || o.clients_behind {
                // The progress shows which groups.
                Action::Wait("")
            } else if !o.late_writes_copied {
                Action::Wait("copying late writes to the destination")
            } else {
                Action::Complete
            }
        }
        (P::Sealed | P::Drain, _) => Action::Abandon("the topic was changed outside the migration"),
        _ => Action::Wait(""),
    }
}

/// Whether an operator may abort a move recorded in `phase` whose topic is as `marker` says:
/// only before the seal. The record alone is not enough: a crash after the seal's
/// configuration write leaves the record in SWITCH while groups may already have drained up to
/// the published seal and gone on to the destination.
pub fn abort_allowed(phase: MigrationPhase, marker: &Marker) -> Result<(), &'static str> {
    match (phase, marker) {
        (_, Marker::Moving { sealed: Some(_) }) => {
            Err("its seal is published: abort is allowed until the seal")
        }
        (MigrationPhase::Prepare | MigrationPhase::Switch, _) => Ok(()),
        _ => Err("abort is allowed until the seal (PREPARE, SWITCH)"),
    }
}

/// What the coordinator observes before a step of an abort (ABORTING).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortObserved {
    pub marker: Marker,
    /// The record says the producers were released (the release was written and recorded).
    pub released: bool,
    /// Every live client has reported since the service started.
    pub settled: bool,
    /// Every live producer of the topic is back on the source at the abort's version.
    pub producers_back: bool,
    /// No consumer group reads the abandoned destination, and every client applied the abort.
    pub groups_left: bool,
    /// An operator forces the abort on (`--advance`).
    pub forced: bool,
}

/// What the coordinator does next in an abort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortAction {
    /// Nothing yet, for this reason.
    Wait(&'static str),
    /// Copy what reached the abandoned destination back to the source (idempotent: copies
    /// found on the source are skipped), then release the producers (clear `hold_sends`), then
    /// record the release.
    CopyBackAndRelease,
    /// The release was written and not recorded: record it.
    RecordReleased,
    /// Clear the topic's marker, then record ABORTED.
    Clear,
    /// The clear was written and not recorded: record ABORTED.
    RecordAborted,
    /// The topic was changed outside the abort: record ABORTED with this note.
    Abandon(&'static str),
}

/// The next action of an abort.
pub fn step_abort(o: &AbortObserved) -> AbortAction {
    let held = match &o.marker {
        Marker::Aborting { held } => *held,
        Marker::Back if o.released => return AbortAction::RecordAborted,
        _ => return AbortAction::Abandon("the topic was changed outside the abort"),
    };
    if !o.forced && !o.settled {
        return AbortAction::Wait("waiting for clients to report after the service started");
    }
    if !o.released {
        if !held {
            return AbortAction::RecordReleased;
        }
        if !o.forced && !o.producers_back {
            // The progress shows which producers.
            return AbortAction::Wait("");
        }
        return AbortAction::CopyBackAndRelease;
    }
    if !o.forced && !o.groups_left {
        return AbortAction::Wait("");
    }
    AbortAction::Clear
}

/// The phase to take a move up again in when its record is missing (the coordinator's file
/// was lost) or finished while the topic still carries its marker (a crash or an error between
/// a configuration write and the record's): the configuration's word. `None`: nothing to take
/// up.
pub fn resume_phase(marker: &Marker) -> Option<MigrationPhase> {
    match marker {
        Marker::Moving { sealed: Some(_) } => Some(MigrationPhase::Drain),
        Marker::Moving { sealed: None } => Some(MigrationPhase::Switch),
        Marker::Aborting { .. } => Some(MigrationPhase::Aborting),
        Marker::Done | Marker::Back | Marker::Elsewhere => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigrationPhase as P;

    fn observed(marker: Marker) -> Observed {
        Observed {
            marker,
            settled: true,
            producers_switched: true,
            clients_behind: false,
            groups_drained: Some(true),
            late_writes_copied: true,
            forced: false,
        }
    }

    #[test]
    fn switch_seals_once_every_producer_switched_and_reuses_a_published_seal() {
        let moving = Marker::Moving { sealed: None };
        assert_eq!(
            step(P::Switch, &observed(moving.clone())),
            Action::Seal { reuse: None }
        );
        let waiting = Observed {
            producers_switched: false,
            ..observed(moving.clone())
        };
        assert!(matches!(step(P::Switch, &waiting), Action::Wait(_)));
        let behind = Observed {
            clients_behind: true,
            ..observed(moving.clone())
        };
        assert!(matches!(step(P::Switch, &behind), Action::Wait(_)));
        let unsettled = Observed {
            settled: false,
            ..observed(moving.clone())
        };
        assert!(matches!(step(P::Switch, &unsettled), Action::Wait(_)));
        assert_eq!(
            step(
                P::Switch,
                &Observed {
                    forced: true,
                    ..waiting
                }
            ),
            Action::Seal { reuse: None }
        );
        // A seal published before a crash (or a lost acknowledgement) is taken, not re-read,
        // even while a producer has not switched.
        let published = Observed {
            producers_switched: false,
            ..observed(Marker::Moving {
                sealed: Some(vec![3, 4]),
            })
        };
        assert_eq!(
            step(P::Switch, &published),
            Action::Seal {
                reuse: Some(vec![3, 4])
            }
        );
        assert!(matches!(
            step(P::Switch, &observed(Marker::Elsewhere)),
            Action::Abandon(_)
        ));
    }

    #[test]
    fn drain_completes_only_when_groups_drained_and_late_writes_copied() {
        let sealed = Marker::Moving {
            sealed: Some(vec![1]),
        };
        assert_eq!(
            step(P::Sealed, &observed(sealed.clone())),
            Action::Record(P::Drain)
        );
        assert_eq!(step(P::Drain, &observed(sealed.clone())), Action::Complete);
        for o in [
            Observed {
                groups_drained: None,
                ..observed(sealed.clone())
            },
            Observed {
                groups_drained: Some(false),
                ..observed(sealed.clone())
            },
            Observed {
                late_writes_copied: false,
                ..observed(sealed.clone())
            },
            Observed {
                clients_behind: true,
                ..observed(sealed.clone())
            },
            Observed {
                settled: false,
                ..observed(sealed.clone())
            },
        ] {
            assert!(matches!(step(P::Drain, &o), Action::Wait(_)), "{o:?}");
        }
        let forced = Observed {
            groups_drained: Some(false),
            forced: true,
            ..observed(sealed)
        };
        assert_eq!(step(P::Drain, &forced), Action::Complete);
        // The completion was written but not recorded.
        assert_eq!(
            step(P::Drain, &observed(Marker::Done)),
            Action::Record(P::Complete)
        );
        assert!(matches!(
            step(P::Drain, &observed(Marker::Elsewhere)),
            Action::Abandon(_)
        ));
    }

    #[test]
    fn an_abort_copies_back_releases_and_clears_and_takes_up_its_own_writes() {
        let o = |marker: Marker, released: bool| AbortObserved {
            marker,
            released,
            settled: true,
            producers_back: true,
            groups_left: true,
            forced: false,
        };
        let held = Marker::Aborting { held: true };
        let free = Marker::Aborting { held: false };
        assert_eq!(
            step_abort(&o(held.clone(), false)),
            AbortAction::CopyBackAndRelease
        );
        let not_back = AbortObserved {
            producers_back: false,
            ..o(held.clone(), false)
        };
        assert!(matches!(step_abort(&not_back), AbortAction::Wait(_)));
        assert_eq!(
            step_abort(&AbortObserved {
                forced: true,
                ..not_back
            }),
            AbortAction::CopyBackAndRelease
        );
        // The release was written, its record lost.
        assert_eq!(
            step_abort(&o(free.clone(), false)),
            AbortAction::RecordReleased
        );
        assert_eq!(step_abort(&o(free.clone(), true)), AbortAction::Clear);
        let reading = AbortObserved {
            groups_left: false,
            ..o(free.clone(), true)
        };
        assert!(matches!(step_abort(&reading), AbortAction::Wait(_)));
        // The clear was written, its record lost.
        assert_eq!(
            step_abort(&o(Marker::Back, true)),
            AbortAction::RecordAborted
        );
        assert!(matches!(
            step_abort(&o(Marker::Back, false)),
            AbortAction::Abandon(_)
        ));
        assert!(matches!(
            step_abort(&o(Marker::Elsewhere, true)),
            AbortAction::Abandon(_)
        ));
        // The abort's route-back was written, its record lost: the move takes it up.
        assert_eq!(
            step(P::Switch, &observed(held.clone())),
            Action::Record(P::Aborting)
        );
        // Abort is refused once a seal is published, whatever the record says.
        let sealed = Marker::Moving {
            sealed: Some(vec![2]),
        };
        assert!(abort_allowed(P::Switch, &sealed).is_err());
        assert!(abort_allowed(P::Switch, &Marker::Moving { sealed: None }).is_ok());
        assert!(abort_allowed(P::Drain, &Marker::Moving { sealed: None }).is_err());
    }

    #[test]
    fn a_move_is_taken_up_again_from_the_configuration() {
        assert_eq!(
            resume_phase(&Marker::Moving { sealed: None }),
            Some(P::Switch)
        );
        assert_eq!(
            resume_phase(&Marker::Moving {
                sealed: Some(vec![0])
            }),
            Some(P::Drain)
        );
        assert_eq!(
            resume_phase(&Marker::Aborting { held: true }),
            Some(P::Aborting)
        );
        assert_eq!(resume_phase(&Marker::Back), None);
        assert_eq!(resume_phase(&Marker::Done), None);
        assert_eq!(resume_phase(&Marker::Elsewhere), None);
    }
}
