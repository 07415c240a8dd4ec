//! The order of a request's asynchronous steps: the request is held until
//! all that gates it has answered, whatever order the answers come in:
//!
//! - the OPEN admission (request count, concurrency slot), sent on the
//!   headers so a tenant over either is refused while its body is still
//!   arriving; a request whose small body comes with its headers sends
//!   none (`admission_filter::one_call`);
//! - the policy's decision, made when the body is complete;
//! - the RESERVE admission (tokens, budget, the pool's fair queue), which
//!   needs the decision and comes after the OPEN answer; FULL, both in one
//!   call, when no OPEN was sent.
//!
//! Pure: the filter reports what happened and does what [`Next`] says.

/// One admission call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Call {
    #[default]
    NotSent,
    Out,
    Answered,
}

/// What the filter does next with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Hold it: an answer or the body is still to come.
    Wait,
    /// Send the RESERVE admission now.
    Reserve,
    /// Let it go on to the pool.
    Go,
    /// It was answered here (a refusal or a local reply): nothing more.
    Stop,
}

#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// Whether the admission phase runs.
    admission: bool,
    open: Call,
    decided: bool,
    reserve: Call,
    answered_here: bool,
}

impl Flow {
    pub fn new(admission: bool) -> Self {
        Self {
            admission,
            ..Self::default()
        }
    }

    pub fn open_sent(&mut self) {
        self.open = Call::Out;
    }

    /// The OPEN answer: admitted (or passed unmetered), or refused.
    pub fn open_answered(&mut self, admitted: bool) -> Next {
        self.open = Call::Answered;
        self.answered_here |= !admitted;
        self.next()
    }

    /// The policy's decision is applied to the request.
    pub fn decided(&mut self) -> Next {
        self.decided = true;
        self.next()
    }

    pub fn reserve_sent(&mut self) {
        self.reserve = Call::Out;
    }

    /// The RESERVE answer: admitted (or passed unmetered), or refused.
    pub fn reserve_answered(&mut self, admitted: bool) -> Next {
        self.reserve = Call::Answered;
        self.answered_here |= !admitted;
        self.next()
    }

    /// A reply was sent for the request (a refusal, a local reply).
    pub fn answered_here(&mut self) -> Next {
        self.answered_here = true;
        self.next()
    }

    /// Whether the request was let go to the pool.
    pub fn has_gone(&self) -> bool {
        self.next() == Next::Go
    }

    /// Whether the request was answered here: nothing more is done for it.
    pub fn is_over(&self) -> bool {
        self.next() == Next::Stop
    }

    fn next(&self) -> Next {
        if self.answered_here {
            return Next::Stop;
        }
        if self.open == Call::Out || !self.decided {
            return Next::Wait;
        }
        match (self.admission, self.reserve) {
            (false, _) | (true, Call::Answered) => Next::Go,
            (true, Call::NotSent) => Next::Reserve,
            (true, Call::Out) => Next::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_answer_before_the_body() {
        let mut flow = Flow::new(true);
        flow.open_sent();
        assert_eq!(flow.open_answered(true), Next::Wait);
        assert_eq!(flow.decided(), Next::Reserve);
        flow.reserve_sent();
        assert!(!flow.has_gone());
        assert_eq!(flow.reserve_answered(true), Next::Go);
        assert!(flow.has_gone());
    }

    #[test]
    fn body_before_the_open_answer_waits_for_it() {
        let mut flow = Flow::new(true);
        flow.open_sent();
        assert_eq!(flow.decided(), Next::Wait);
        assert_eq!(flow.open_answered(true), Next::Reserve);
        flow.reserve_sent();
        assert_eq!(flow.reserve_answered(true), Next::Go);
    }

    #[test]
    fn a_refusal_stops_the_request_whenever_it_comes() {
        let mut flow = Flow::new(true);
        flow.open_sent();
        assert_eq!(flow.open_answered(false), Next::Stop);
        assert_eq!(flow.decided(), Next::Stop);

        let mut flow = Flow::new(true);
        flow.open_sent();
        assert_eq!(flow.decided(), Next::Wait);
        assert_eq!(flow.open_answered(false), Next::Stop);

        let mut flow = Flow::new(true);
        flow.open_sent();
        flow.open_answered(true);
        flow.decided();
        flow.reserve_sent();
        assert_eq!(flow.reserve_answered(false), Next::Stop);

        let mut flow = Flow::new(true);
        flow.open_sent();
        assert_eq!(flow.answered_here(), Next::Stop);
        assert_eq!(flow.open_answered(true), Next::Stop);
    }

    #[test]
    fn while_reserve_is_out_the_request_waits() {
        let mut flow = Flow::new(true);
        flow.open_sent();
        flow.open_answered(true);
        assert_eq!(flow.decided(), Next::Reserve);
        flow.reserve_sent();
        assert_eq!(flow.next(), Next::Wait);
    }

    #[test]
    fn without_admission_the_decision_lets_it_go() {
        let mut flow = Flow::new(false);
        assert_eq!(flow.next(), Next::Wait);
        assert_eq!(flow.decided(), Next::Go);
    }

    #[test]
    fn an_open_that_was_not_sent_gates_nothing() {
        // Fail open on the OPEN call: the request goes on unmetered there.
        let mut flow = Flow::new(true);
        assert_eq!(flow.decided(), Next::Reserve);
    }
}
