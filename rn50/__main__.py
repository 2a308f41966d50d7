from rn50.cli import main
from rn50.launch import as_rank

as_rank(main)()
