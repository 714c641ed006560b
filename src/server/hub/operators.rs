//! What operators may do to other members: be granted the role, kick,
//! look up an address. Who may become an operator (passwords, tokens) is
//! decided by the session and `access.rs`; this only checks the role.

use super::*;

impl Hub {
    /// Makes a member an operator (its token was checked by the caller).
    pub fn grant_operator(&self, id: MemberId) -> Result<Nick, HubError> {
        let mut st = self.lock();
        let member = st.members.get_mut(&id).ok_or(HubError::Gone)?;
        member.operator = true;
        info!(operator = %member.nick, action = "oper", "operator logged in");
        Ok(member.nick.clone())
    }

    /// Counts a wrong operator token; returns how many there have been.
    pub fn operator_refused(&self, id: MemberId) -> Result<u32, HubError> {
        let mut st = self.lock();
        let member = st.members.get_mut(&id).ok_or(HubError::Gone)?;
        member.oper_failures += 1;
        // Who and from where, never what was typed.
        let peer = member.addr.map(|a| a.to_string()).unwrap_or_default();
        warn!(nick = %member.nick, %peer, attempt = member.oper_failures, "wrong operator token");
        Ok(member.oper_failures)
    }

    /// The operator's nick, or `NotOperator`.
    pub(super) fn operator(st: &State, id: MemberId) -> Result<Nick, HubError> {
        let member = st.members.get(&id).ok_or(HubError::Gone)?;
        if !member.operator {
            return Err(HubError::NotOperator);
        }
        Ok(member.nick.clone())
    }

    /// Removes a member by nick on an operator's word: it is told why, and
    /// its rooms see it kicked.
    pub fn kick(&self, by: MemberId, nick: &str, reason: Option<&str>) -> Result<Nick, HubError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let operator = Self::operator(st, by)?;
        let target = *st
            .nicks
            .get(&nick.to_ascii_lowercase())
            .ok_or_else(|| HubError::NoSuchNick(nick.to_string()))?;
        let name = st.kick_member(target, &operator, reason);
        self.settle(st);
        info!(operator = %operator, action = "kick", target = %name, reason = reason.unwrap_or(""), "kicked");
        Ok(name)
    }

    /// Kicks every member connected from an address `banned` matches, on
    /// an operator's word; returns their nicks.
    pub fn kick_where(
        &self,
        by: MemberId,
        banned: impl Fn(IpAddr) -> bool,
        reason: Option<&str>,
    ) -> Result<Vec<Nick>, HubError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let operator = Self::operator(st, by)?;
        let targets: Vec<MemberId> = st
            .members
            .iter()
            // Operators stay: banning one's own address by mistake must
            // not lock out the one who can undo it.
            .filter(|(_, m)| !m.operator && m.addr.is_some_and(&banned))
            .map(|(id, _)| *id)
            .collect();
        let kicked = targets
            .into_iter()
            .map(|id| st.kick_member(id, &operator, reason))
            .collect();
        self.settle(st);
        Ok(kicked)
    }

    /// The address a nick connects from, for an operator's ban.
    pub fn address_of(&self, by: MemberId, nick: &str) -> Result<Option<IpAddr>, HubError> {
        let st = self.lock();
        Self::operator(&st, by)?;
        let id = st
            .nicks
            .get(&nick.to_ascii_lowercase())
            .ok_or_else(|| HubError::NoSuchNick(nick.to_string()))?;
        Ok(st.members.get(id).and_then(|m| m.addr))
    }

    /// Checks that `id` is an operator, for actions outside the hub (bans).
    pub fn check_operator(&self, id: MemberId) -> Result<Nick, HubError> {
        Self::operator(&self.lock(), id)
    }
}
