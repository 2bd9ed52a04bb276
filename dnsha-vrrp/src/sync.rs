//! Sync groups, as keepalived's `vrrp_sync_group`: instances whose
//! addresses must stay together on one node (an outside and an inside VIP,
//! or the IPv4 and IPv6 instance of one service). Pure: the shell feeds the
//! members' states to [`orders`] and sends each member what it returns.
//!
//! - A member in FAULT by its own trackers puts the others in FAULT (through
//!   the weight-0 tracker [`fault_tracker`], which every member has).
//! - A member that lost its election (it backs up a master that beats it)
//!   holds the others ([`Command::SyncHold`](crate::Command::SyncHold)): a
//!   master among them resigns with priority 0, and none preempts.
//! - A member that became master takes the others with it
//!   ([`Command::SyncMaster`](crate::Command::SyncMaster)) unless they are
//!   held or in FAULT.
//!
//! ```
//! use dnsha_vrrp::sync::{orders, Member, Orders};
//! use dnsha_vrrp::State;
//!
//! let master = Member { state: State::Master, own_fault: false, lost_election: false };
//! let backup = Member { state: State::Backup, own_fault: false, lost_election: false };
//! // One member became master: the other follows.
//! assert!(orders(&[master, backup])[1].follow_master);
//! // One lost its election: the other is held.
//! let lost = Member { lost_election: true, ..backup };
//! assert!(orders(&[lost, master])[1].hold);
//! ```

use crate::router::State;

/// What [`orders`] needs of one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its state.
    pub state: State,
    /// In FAULT because of one of its own trackers (not the group's).
    pub own_fault: bool,
    /// It backs up a master that beats it.
    pub lost_election: bool,
}

/// What one member must be told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Orders {
    /// Another member is in FAULT by its own trackers: the group's tracker
    /// is down.
    pub sync_fault: bool,
    /// Another member lost its election.
    pub hold: bool,
    /// Another member is master, and this backup may follow.
    pub follow_master: bool,
}

/// The tracker through which a group's FAULT reaches its members.
pub fn fault_tracker(group: &str) -> String {
    format!("sync:{group}")
}

/// Whether `tracker` is a sync group's (not one of the instance's own).
pub fn is_group_tracker(tracker: &str) -> bool {
    tracker.starts_with("sync:")
}

/// The orders for each member of one group, in order.
pub fn orders(members: &[Member]) -> Vec<Orders> {
    (0..members.len())
        .map(|i| {
            let others = || {
                members
                    .iter()
                    .enumerate()
                    .filter(move |(j, _)| *j != i)
                    .map(|(_, m)| m)
            };
            let sync_fault = others().any(|m| m.own_fault);
            let hold = others().any(|m| m.lost_election);
            let me = members[i];
            let follow_master = !sync_fault
                && !hold
                && me.state == State::Backup
                && !me.lost_election
                && others().any(|m| m.state == State::Master);
            Orders {
                sync_fault,
                hold,
                follow_master,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(state: State) -> Member {
        Member {
            state,
            own_fault: false,
            lost_election: false,
        }
    }

    #[test]
    fn a_fault_reaches_the_others_but_not_its_own_cause() {
        let faulty = Member {
            own_fault: true,
            ..m(State::Fault)
        };
        // The other went to FAULT through the group's tracker: that is not
        // its own fault, so it does not hold the first one in FAULT.
        let o = orders(&[faulty, m(State::Fault), m(State::Master)]);
        assert!(!o[0].sync_fault);
        assert!(o[1].sync_fault && o[2].sync_fault);
        assert!(!o[1].follow_master);
    }

    #[test]
    fn a_lost_election_holds_the_others_and_nobody_follows_a_master() {
        let lost = Member {
            lost_election: true,
            ..m(State::Backup)
        };
        let o = orders(&[lost, m(State::Master), m(State::Backup)]);
        assert!(!o[0].hold);
        assert!(o[1].hold && o[2].hold);
        assert!(
            !o[0].follow_master,
            "it lost: it must not be pushed to master"
        );
        assert!(!o[2].follow_master);
    }

    #[test]
    fn backups_follow_a_master_and_quiet_groups_get_nothing() {
        let o = orders(&[m(State::Backup), m(State::Master), m(State::Backup)]);
        assert!(o[0].follow_master && o[2].follow_master && !o[1].follow_master);
        let o = orders(&[m(State::Backup), m(State::Backup)]);
        assert_eq!(o, vec![Orders::default(); 2]);
        let o = orders(&[m(State::Master), m(State::Master)]);
        assert_eq!(o, vec![Orders::default(); 2]);
    }
}
