//! One run, start to end: compile, instantiate with WASI linked in, enter `_start` or
//! `wasi:cli/run`, and turn how it ended into a `WasmExit`. The guest runs as a future on a
//! current-thread tokio runtime, so the deadline cuts a host call that blocks (a read of stdin, a
//! sleep) as well as wasm code (through the epoch). Nothing is shared between runs but the
//! on-disk compilation cache.

use std::io::Write;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Linker, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::compile::{compile, engine_for, read_module, Program};
use crate::error::{one_line, WasmError};
use crate::limits::MemoryBudget;
use crate::preopen::wasi_builder;
use crate::timeout::EpochTimer;
use crate::{WasmExit, WasmRun};

/// Runs `run.module` to its end; see [`WasmRun`] for what it may use.
///
/// `Err` means the program never started (missing file, malformed module, bad preopen, link
/// error); once it has started, every ending is a [`WasmExit`].
pub fn run(run: &WasmRun) -> Result<WasmExit, WasmError> {
    let bytes = read_module(&run.module)?;
    let wasi = wasi_builder(run)?;
    let engine = engine_for(run)?;
    let program = compile(&engine, &bytes)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| WasmError::Setup(format!("tokio runtime: {err}")))?;
    let deadline = run.timeout.map(|timeout| Instant::now() + timeout);
    let _timer = deadline
        .map(|deadline| EpochTimer::start(&engine, deadline))
        .transpose()?;
    let budget = MemoryBudget::new(run.memory_limit);
    let ended = runtime.block_on(async {
        let limits = StoreLimits {
            budget,
            fuel: run.fuel,
            deadline: deadline.is_some(),
        };
        let execution = execute(&engine, program, wasi, limits);
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), execution)
                .await
                .unwrap_or(Ok(WasmExit::Timeout)),
            None => execution.await,
        }
    });
    // A blocking call the deadline cut (a read of a FIFO, say) may still hold a pool thread:
    // leave it behind rather than wait for it.
    runtime.shutdown_background();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    ended
}

/// The store data of a core module.
struct CoreGuest {
    wasi: WasiP1Ctx,
    budget: MemoryBudget,
}

/// The store data of a component.
struct ComponentGuest {
    wasi: WasiCtx,
    table: ResourceTable,
    budget: MemoryBudget,
}

impl WasiView for ComponentGuest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

async fn execute(
    engine: &wasmtime::Engine,
    program: Program,
    mut wasi: WasiCtxBuilder,
    limits: StoreLimits,
) -> Result<WasmExit, WasmError> {
    let StoreLimits {
        budget,
        fuel,
        deadline,
    } = limits;
    let link = |err: wasmtime::Error| WasmError::Setup(format!("link WASI: {}", one_line(&err)));
    match program {
        Program::Core(module) => {
            let guest = CoreGuest {
                wasi: wasi.build_p1(),
                budget,
            };
            let mut store = Store::new(engine, guest);
            store.limiter(|guest| &mut guest.budget);
            limit_store(&mut store, fuel, deadline)?;
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |guest: &mut CoreGuest| {
                &mut guest.wasi
            })
            .map_err(link)?;
            let instance = match linker.instantiate_async(&mut store, &module).await {
                Ok(instance) => instance,
                Err(err) => return instantiation_failed(err),
            };
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|err| {
                    WasmError::Setup(format!("not a WASI command: {}", one_line(&err)))
                })?;
            Ok(match start.call_async(&mut store, ()).await {
                Ok(()) => WasmExit::Code(0),
                Err(err) => exit_of(&err),
            })
        }
        Program::Component(component) => {
            let guest = ComponentGuest {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                budget,
            };
            let mut store = Store::new(engine, guest);
            store.limiter(|guest| &mut guest.budget);
            limit_store(&mut store, fuel, deadline)?;
            let mut linker = wasmtime::component::Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
            let command = match Command::instantiate_async(&mut store, &component, &linker).await {
                Ok(command) => command,
                Err(err) => return instantiation_failed(err),
            };
            Ok(match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => WasmExit::Code(0),
                Ok(Err(())) => WasmExit::Code(1),
                Err(err) => exit_of(&err),
            })
        }
    }
}

/// What caps one store.
struct StoreLimits {
    budget: MemoryBudget,
    fuel: Option<u64>,
    /// Whether the run has a deadline (the engine then has epoch checks on).
    deadline: bool,
}

/// Fuel and the epoch deadline of a new store (the engine has them on only when asked for).
fn limit_store<T>(
    store: &mut Store<T>,
    fuel: Option<u64>,
    deadline: bool,
) -> Result<(), WasmError> {
    if let Some(fuel) = fuel {
        store
            .set_fuel(fuel)
            .map_err(|err| WasmError::Setup(format!("fuel: {}", one_line(&err))))?;
    }
    if deadline {
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
    }
    Ok(())
}

/// A failed instantiation: a trap in a start function is an ending like any other, anything
/// else (a missing import, memory over the limit from the start) means the run never started.
fn instantiation_failed(err: wasmtime::Error) -> Result<WasmExit, WasmError> {
    if err.downcast_ref::<Trap>().is_some() || err.downcast_ref::<I32Exit>().is_some() {
        return Ok(exit_of(&err));
    }
    Err(WasmError::Setup(format!("instantiate: {}", one_line(&err))))
}

/// How an error out of guest code ended the run.
fn exit_of(err: &wasmtime::Error) -> WasmExit {
    if let Some(I32Exit(code)) = err.downcast_ref::<I32Exit>() {
        return WasmExit::Code(*code);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => WasmExit::Timeout,
        Some(Trap::OutOfFuel) => WasmExit::FuelExhausted,
        _ => WasmExit::Trap(one_line(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_told_apart() {
        assert_eq!(
            exit_of(&wasmtime::Error::new(I32Exit(7))),
            WasmExit::Code(7)
        );
        assert_eq!(
            exit_of(&wasmtime::Error::new(Trap::Interrupt)),
            WasmExit::Timeout
        );
        assert_eq!(
            exit_of(&wasmtime::Error::new(Trap::OutOfFuel)),
            WasmExit::FuelExhausted
        );
        let trap = wasmtime::Error::new(Trap::UnreachableCodeReached).context("while running");
        let WasmExit::Trap(message) = exit_of(&trap) else {
            panic!("expected a trap");
        };
        assert!(!message.contains('\n'));
        assert!(message.starts_with("while running: "), "{message}");
    }
}
