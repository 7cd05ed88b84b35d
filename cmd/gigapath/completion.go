package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Shell completion: urfave/cli answers `gigapath ARGS... --generate-bash-completion`
// with the commands or flags that may follow ARGS (EnableBashCompletion in
// main.go), so the bash and zsh scripts only ask the binary and always
// match it; fish gets the static script urfave/cli renders from the
// command tree.

// The binary is asked with the words before the cursor plus one more:
// "-" when the word being completed starts with "-", so it lists the flags
// (urfave/cli v2.27 fails to parse a partial flag such as "--co" and lists
// nothing), else "" so it lists the commands (urfave/cli suggests flags
// whenever the last word is one, as after -j). The shell keeps the
// candidates that match; the help subcommand urfave/cli adds is left out.
// After a "--" the binary is not asked: urfave/cli would take
// --generate-bash-completion for an argument and run the command. No
// candidates falls back to file names, for FILE arguments.
const bashCompletion = `# bash completion for gigapath (gigapath completion bash)
_gigapath() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local args=("${COMP_WORDS[@]:1:COMP_CWORD-1}") w opts=()
	for w in "${args[@]}"; do [[ $w == -- ]] && return; done
	if [[ $cur == -* ]]; then args+=(-); else args+=(""); fi
	while IFS= read -r w; do
		[[ $w == help || $w == h ]] || opts+=("$w")
	done < <("${COMP_WORDS[0]}" "${args[@]}" --generate-bash-completion 2>/dev/null)
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "${opts[*]}" -- "$cur"))
}
complete -o default -F _gigapath gigapath
`

const zshCompletion = `#compdef gigapath
# zsh completion for gigapath (gigapath completion zsh)
local -a args opts
local cur=${words[CURRENT]}
args=("${(@)words[2,CURRENT-1]}")
(( ${args[(Ie)--]} )) && { _files; return }
if [[ $cur == -* ]]; then args+=(-); else args+=(""); fi
opts=("${(@f)$(${words[1]} "${args[@]}" --generate-bash-completion 2>/dev/null)}")
opts=(${opts:#(help|h)})
if (( ${#opts} )); then
	compadd -a opts
else
	_files
fi
`

func init() {
	register(&cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `The Debian package installs all three. By hand:
   gigapath completion bash > /etc/bash_completion.d/gigapath
   gigapath completion zsh > /usr/local/share/zsh/site-functions/_gigapath
   gigapath completion fish > ~/.config/fish/completions/gigapath.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("completion: want one shell: bash, zsh or fish")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Print(bashCompletion)
			case "zsh":
				fmt.Print(zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Print(s)
			default:
				return usageErrorf("completion: unknown shell %q; want bash, zsh or fish", sh)
			}
			return nil
		},
	})
}
