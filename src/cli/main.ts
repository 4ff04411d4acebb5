#!/usr/bin/env node
/**
 * cli/main: the `podwall` command. Each subcommand lives in its own module and registers here.
 * May not: hold logic of its own beyond wiring.
 */
import { Command } from "commander";
import { registerAgent } from "./agent.js";
import { registerCni } from "./cni.js";
import { registerDataplane } from "./dataplane.js";
import { registerDemo } from "./demo.js";
import { registerDiff } from "./diff.js";
import { registerLab } from "./lab.js";
import { registerExplain, registerSimulate } from "./simulate.js";

const program = new Command();
program
  .name("podwall")
  .description("Kubernetes NetworkPolicy enforcer: compiler, kernel dataplane, node agent")
  .version("0.1.0")
  .showHelpAfterError()
  .exitOverride((err) => {
    // Usage errors exit 2 like bad input; --help/--version exit 0.
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
registerSimulate(program);
registerExplain(program);
registerDiff(program);
registerDataplane(program);
registerLab(program);
registerAgent(program);
registerDemo(program);
registerCni(program);
await program.parseAsync(process.argv);
