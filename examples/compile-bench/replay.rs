// The replay both crates' binaries run (`include!`d with `compile_bench` naming the crate):
// what `scripts/compile-bench` counts instructions of (callgrind).

use std::hint::black_box;

use factum::Aggregate as _;

macro_rules! replay {
    ($aggregate:ident, $event:ident, $($variant:ident($happened:ident)),*) => {{
        let events: Vec<$event> = (0..20_000_u32)
            .flat_map(|at| {
                vec![$($event::$variant($happened { amount: u64::from(at), note: String::new(), at })),*]
            })
            .collect();
        let state = compile_bench::$aggregate::replay(black_box(&events));
        state.total ^ state.count
    }};
}

use compile_bench::*;

fn main() {
    let mut checksum = 0;
    checksum ^= replay!(
        Aggregate0,
        Aggregate0Event,
        V0(Happened0x0),
        V1(Happened0x1),
        V2(Happened0x2),
        V3(Happened0x3),
        V4(Happened0x4)
    );
    checksum ^= replay!(
        Aggregate9,
        Aggregate9Event,
        V0(Happened9x0),
        V1(Happened9x1),
        V2(Happened9x2),
        V3(Happened9x3),
        V4(Happened9x4)
    );
    println!("{checksum}");
}
