//! A register model for the tests of the checker and of the piece finder:
//! write a value, read it.

use super::{Model, Operation};

/// A register: write a value, read it.
pub(crate) struct Register;

#[derive(Debug, Clone)]
pub(crate) enum In {
    Write(u32),
    Read,
}

impl Model for Register {
    type State = u32;
    type Input = In;
    type Output = u32;
    fn init(&self) -> u32 {
        0
    }
    fn step(&self, state: &u32, input: &In, output: &u32) -> Option<u32> {
        match input {
            In::Write(v) => Some(*v),
            In::Read => (output == state).then_some(*state),
        }
    }
}

/// One operation of a register history.
pub(crate) fn op(input: In, output: u32, call: u64, ret: u64) -> Operation<In, u32> {
    Operation {
        input,
        output,
        call,
        ret,
    }
}
