/* commands.h - every subcommand of the paliflow binary. Each lives in cli/cmd_<name>.c and
 * receives argv starting at the subcommand's name (argv[0] == "tokenize", ...).
 * Exit status: 0 success, 1 the work ran but some items failed, 2 usage or setup error. */
#ifndef PF_CLI_COMMANDS_H
#define PF_CLI_COMMANDS_H

int cmd_tokenize(int argc, char **argv);
int cmd_preprocess_image(int argc, char **argv);
int cmd_golden(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_make_random_checkpoint(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_producer(int argc, char **argv);
int cmd_preprocess_worker(int argc, char **argv);
int cmd_inference_worker(int argc, char **argv);
int cmd_sink(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_decode_answer(int argc, char **argv);

#endif
