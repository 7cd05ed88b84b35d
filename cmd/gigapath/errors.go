package main

import "fmt"

// usageError marks bad command-line input; it makes gigapath exit with 2.
// Its message names the input and what is valid.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}
