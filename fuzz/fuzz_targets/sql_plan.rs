//! Arbitrary text through the SQL front end, as `weir run` and the API's job submission plan a
//! script: [`plan_script`] must answer a plan or a `SqlError`, never panic, overflow the stack
//! or hang. (The planner turns its own panics into an error for the caller, but libFuzzer aborts
//! on any panic first, so a contained planner bug is still reported here.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_dataflow::config::JobConfig;
use weir_dataflow::sql::plan_script;
use weir_fuzz::CappedAllocator;

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 512 << 20 }> = CappedAllocator;

fuzz_target!(
    init: weir_fuzz::seeds::write_if_asked("sql_plan"),
    |data: &[u8]| {
        if let Ok(sql) = std::str::from_utf8(data) {
            let _ = plan_script(sql, JobConfig::default());
        }
    }
);
